"""tokenmill: raw web text to a trained language model, on Dask.

Everything the CLI does is one call away::

    import tokenmill
    result = tokenmill.run("pipelines/quickstart.yaml")
    print(result.output, result.report)
"""

from tokenmill._version import __version__
from tokenmill.api import Pipeline, RunResult, load_pipeline, run

__all__ = ["Pipeline", "RunResult", "__version__", "load_pipeline", "run"]
