# GPU image: CUDA runtime + the app.
# `docker run --gpus all -e VRFT_AUTH=USER:PASS -p 7860:7860 -v $PWD/data:/app/data IMAGE`
# The app listens on 0.0.0.0 here, so it requires VRFT_AUTH: without it the container exits at once with a
# sentence saying so (add `--insecure-no-auth` to the command only behind a proxy that asks for a login).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 VRFT_DATA_DIR=/app/data
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install -r requirements.txt
# GPU-only extras (vLLM for colocated generation, liger-kernel). requirements.txt is repeated so its pins hold.
COPY requirements-gpu.txt .
RUN /opt/venv/bin/pip install -r requirements.txt -r requirements-gpu.txt
COPY . .
EXPOSE 7860
CMD ["/opt/venv/bin/python", "app.py", "--host", "0.0.0.0"]
