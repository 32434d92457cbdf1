"""Jobs: runs as durable records, and the processes that carry them out. Run rows with their metric points,
rollouts, checkpoints and evaluations (`runs`); the worker, which claims runs with fenced leases, keeps a job record
and starts each job in a fresh or warm standby process; one training job's main process
(`python -m backend.jobs.training`); using a tuned model (predict, evaluate, export); the comparison table; and the
processes the page starts but does not own (`background`). It may import engine/, data/, scoring/ and storage/,
never ui/. The worker never imports torch: whatever is heavy is imported inside the job process's functions."""
