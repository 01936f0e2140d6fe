"""``warpbio`` command line: device facts, GPU leases for shell rules, reruns.

``warpbio lease --gpus N -- CMD ...`` runs CMD with N leased GPUs in
CUDA_VISIBLE_DEVICES.  The lock descriptors are inherited by CMD, so the lease
lasts exactly as long as CMD's process tree, even if this wrapper is killed.
``warpbio reproduce`` reruns a finished run from scratch and compares checksums;
``warpbio pin-envs`` writes the pinned package lists of workflow/envs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from warpbio.device import (
    DeviceError,
    discover_gpu_pool,
    gpu_facts,
    lease_gpus,
    resolve_backend,
)


def _lease(args: argparse.Namespace) -> int:
    if not args.command:
        print("warpbio lease: give the command after '--'", file=sys.stderr)
        return 2
    pool = args.pool.split(",") if args.pool else None
    lease = lease_gpus(args.gpus, pool=pool, lock_dir=args.lock_dir, timeout=args.timeout)
    for fd in lease.file_descriptors():
        os.set_inheritable(fd, True)
    command = args.command[1:] if args.command[0] == "--" else args.command
    os.execvp(command[0], command)  # replaces this process; fds stay open


def _devices(args: argparse.Namespace) -> int:
    facts = {
        "backend_auto": resolve_backend("auto"),
        "pool": discover_gpu_pool(),
        "gpus": gpu_facts(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    print(json.dumps(facts, indent=2))
    return 0


# Subcommands with their own argument parsers (and --help).
DELEGATED = {
    "reproduce": ("warpbio.reproduce", "rerun a finished run from scratch, compare checksums"),
    "pin-envs": ("warpbio.pins", "write pinned package lists of workflow/envs"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        from importlib import import_module

        return import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="warpbio", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command_name", required=True)

    lease = commands.add_parser("lease", help="run a command with N leased GPUs")
    lease.add_argument("--gpus", "-n", type=int, required=True)
    lease.add_argument("--pool", help="comma-separated GPU ids (default: discovered)")
    lease.add_argument("--lock-dir", default=None)
    lease.add_argument("--timeout", type=float, default=3600.0)
    lease.add_argument("command", nargs=argparse.REMAINDER)
    lease.set_defaults(func=_lease)

    devices = commands.add_parser("devices", help="print backend, GPU pool and GPU facts")
    devices.set_defaults(func=_devices)
    for name, (_, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except DeviceError as error:
        print(f"warpbio: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
