"""Jobs: runs as durable records, and the processes that carry them out. Run rows (`runs`) with what they record as
they train: metric points, rollouts, checkpoints and evaluations (`run_history`); the worker, which claims runs with
fenced leases, keeps a job record and starts each job in a fresh or warm standby process; one training job's main
process (`python -m backend.jobs.training`, its step callbacks in `training_callbacks`); using a tuned model (predict,
evaluate, export), the Test tab's questions queued for the worker (`prediction_queue`) and the answerer processes it
starts to answer them (`answerer`); the comparison table; and the
processes the page starts but does not own (`background`). It may import engine/, data/, scoring/ and storage/,
never ui/. The worker never imports torch: whatever is heavy is imported inside the job process's functions."""
