"""The tiny Ray Serve application the real-Ray tests deploy (a working_dir of its own holds it)."""

from __future__ import annotations


def serve_app(deployment: str, num_cpus: float) -> str:
    """The source of ``<module>:app``: one deployment answering "ok", reserving ``num_cpus`` per replica."""
    return f'''\
from ray import serve


@serve.deployment(ray_actor_options={{"num_cpus": {num_cpus!r}}})
class {deployment}:
    def __call__(self, request):
        return "ok"


app = {deployment}.bind()
'''
