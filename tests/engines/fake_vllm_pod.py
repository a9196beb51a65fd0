"""The vLLM stand-in as a pod's engine process on the sandbox, where a pod runs commands, not
images: ``python -m engines.fake_vllm_pod --port 8001 --served-dir /models/weights`` serves on
127.0.0.1 (the pod's loopback, as the chart's vLLM snippet runs vLLM) until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading

from engines.fake_engines import FakeVLLM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-dir", required=True)
    options = parser.parse_args()
    FakeVLLM.bind_port = options.port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeVLLM(served_dir=options.served_dir):
        stop.wait()


if __name__ == "__main__":
    main()
