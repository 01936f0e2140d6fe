"""A plotting process of :class:`warpbio.ecg.plots.PlotWorkers`: imports pyplot (Agg)
once, then draws the (function, *args) jobs that arrive on stdin as length-prefixed
pickles, answering each with ("done", seconds drawing) or ("error", traceback) on stdout."""

import pickle
import sys
import time
import traceback


def _send(stream, message) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(payload).to_bytes(8, "little") + payload)
    stream.flush()


def serve(requests, replies) -> None:
    """Answer jobs until the parent closes our stdin."""
    while True:
        header = requests.read(8)
        if len(header) < 8:
            return
        try:
            function, *args = pickle.loads(requests.read(int.from_bytes(header, "little")))
            started = time.perf_counter()
            function(*args)
            _send(replies, ("done", time.perf_counter() - started))
        except Exception:
            _send(replies, ("error", traceback.format_exc()))


def main() -> None:
    replies = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the reply stream
    try:
        from warpbio.ecg.plots import _pyplot

        _pyplot()
    except Exception:
        _send(replies, ("error", traceback.format_exc()))
        return
    _send(replies, ("ready", None))
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
