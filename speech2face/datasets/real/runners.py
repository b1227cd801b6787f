"""Which Beam runner a build runs on: options with local defaults, an offline-safe local
runner, and what a finished run reports.

The DirectRunner (no --runner) runs one process per core on this machine; any other runner
(Dataflow, Flink, Spark, ...) takes its standard pipeline options unchanged (docs/data.md).
"""

import collections
import contextlib
import io
import json
import os
from typing import Optional

import apache_beam as beam
from absl import logging
from apache_beam.options import pipeline_options as beam_options

DIRECT_RUNNERS = (None, "DirectRunner", "direct", "Direct")


def pipeline_options(beam_args=(), num_workers: Optional[int] = None):
    """Beam options from command-line style args, with this builder's DirectRunner defaults.

    Raises ValueError for an argument Beam does not know either (a mistyped flag).

    Without --runner (or with the DirectRunner): `direct_num_workers` = num_workers (default:
    the machine's cores) and `direct_running_mode=multi_processing` (one process per worker:
    dlib and VGG-Face hold the GIL, so threads would not run in parallel), unless the args set
    them. Other runners (Dataflow, Flink, Spark, ...) take their own options unchanged.
    """
    beam_args = list(beam_args)
    options = beam_options.PipelineOptions(beam_args)
    # Beam parses with argparse, which prints its whole usage and exits on a bad value
    # (--direct_running_mode=bogus): keep its one message instead.
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            known = set(options.get_all_options())
    except SystemExit:
        message = (usage.getvalue().strip().splitlines() or ["bad Beam option"])[-1]
        raise ValueError(f"Beam pipeline option: {message.split(': error: ')[-1]}") from None
    # Beam only warns about arguments it does not know; a mistyped flag of this builder would
    # land here and be ignored, so refuse them instead.
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - known)
    unknown += [a for a in beam_args if not a.startswith("-")]
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}: neither a flag of the "
                         "builder (see --helpfull) nor an Apache Beam pipeline option")
    if is_direct(options):
        direct = options.view_as(beam_options.DirectOptions)
        if not any(a.startswith("--direct_num_workers") for a in beam_args):
            direct.direct_num_workers = num_workers or os.cpu_count() or 1
        if not any(a.startswith("--direct_running_mode") for a in beam_args):
            direct.direct_running_mode = "multi_processing"
        if direct.direct_num_workers < 1:
            raise ValueError(f"--num_workers / --direct_num_workers must be >= 1, got "
                             f"{direct.direct_num_workers}")
    return options


def make_pipeline(options) -> beam.Pipeline:
    """A Pipeline on the runner the options name; for the DirectRunner, Beam's local FnApiRunner.

    Beam 2.77's DirectRunner first tries the Prism runner, which it downloads from GitHub at run
    time (a silent network fetch, and a failure on offline machines before it falls back) and
    which ignores `direct_num_workers`; the FnApiRunner is what it falls back to, run directly.
    """
    if not is_direct(options):
        return beam.Pipeline(options=options)
    # pylint: disable=import-outside-toplevel
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability import portable_runner
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    # As the DirectRunner does it: the workers get the pipeline options through provision info.
    encoded = portable_runner.JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=provision), options=options)



@contextlib.contextmanager
def local_ports_on_loopback(options):
    """Within the block, the local runner's gRPC servers listen on localhost only.

    Beam's FnApiRunner (the DirectRunner's multi_threading and multi_processing modes) serves
    its control, data, state and logging APIs on unauthenticated gRPC ports bound to every
    interface ('[::]:0' in worker_handlers.GrpcServer, no option changes it); the control port
    also serves artifact retrieval, which reads any file or URL it is asked for. Its workers
    connect to 'localhost:<port>', so binding 'localhost:0' instead loses nothing. Other
    runners are left as they are (docs/failures.md, "Security notes").
    """
    if not is_direct(options):
        yield
        return
    # pylint: disable=import-outside-toplevel
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    real = worker_handlers.grpc
    worker_handlers.grpc = _LoopbackGrpc(real)
    try:
        yield
    finally:
        worker_handlers.grpc = real


class _LoopbackGrpc:
    """The grpc module, but servers made by `server()` bind '[::]:<port>' as 'localhost:'."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)

    def server(self, *args, **kwargs):
        return _LoopbackServer(self._module.server(*args, **kwargs))


class _LoopbackServer:
    def __init__(self, server):
        self._server = server

    def __getattr__(self, name):
        return getattr(self._server, name)

    def add_insecure_port(self, address: str) -> int:
        if address.startswith(("[::]:", "0.0.0.0:")):
            address = "localhost:" + address.rsplit(":", 1)[1]
        return self._server.add_insecure_port(address)


def is_direct(options) -> bool:
    return options.view_as(beam_options.StandardOptions).runner in DIRECT_RUNNERS


def describe(options) -> dict:
    """The options a run was given (JSON-serialisable ones), with the runner and, for the
    DirectRunner, its worker count and mode."""
    info = options.get_all_options(drop_default=True)
    info["runner"] = options.view_as(beam_options.StandardOptions).runner or "DirectRunner"
    if is_direct(options):
        direct = options.view_as(beam_options.DirectOptions)
        info.update(direct_num_workers=direct.direct_num_workers,
                    direct_running_mode=direct.direct_running_mode)
    return {k: v for k, v in sorted(info.items()) if _jsonable(v)}


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def counters(result, namespace: str) -> dict:
    """The Beam metric counters of `namespace` summed over steps ({} where the runner does not
    report metrics: dataset_info.json, built inside the pipeline, has the same counts)."""
    try:
        query = result.metrics().query(
            beam.metrics.MetricsFilter().with_namespace(namespace))
    except NotImplementedError:  # PipelineResult.metrics() of runners without metrics support
        logging.warning("This runner reports no Beam metrics; see dataset_info.json for counts.")
        return {}
    out = collections.Counter()
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] += int(value or 0)
    return dict(out)

