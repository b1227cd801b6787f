"""Which Beam runner a build runs on: options with local defaults, an offline-safe local
runner, and what a finished run reports.

The DirectRunner (no --runner) runs one process per core on this machine; any other runner
(Dataflow, Flink, Spark, ...) takes its standard pipeline options unchanged (docs/data.md).
"""

import collections
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
    # Beam only warns about arguments it does not know; a mistyped flag of this builder would
    # land here and be ignored, so refuse them instead.
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                     - set(options.get_all_options()))
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

