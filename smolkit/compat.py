"""The transformers versions smolkit is tested with, and what that means for the one installed.

smolkit reads transformers' own processor list through private methods of ``GenerationMixin`` (``generate_processors``
in smolkit/params.py): that is how ``Distribution.stages`` and ``explain`` stay faithful to what ``generate`` runs,
and also why a release can change what the kit shows. ``make test-compat`` runs the parity, stage-order and export
tests against each version in ``TRANSFORMERS_TESTED``, each in a venv of its own (environment/compat.sh reads the
list from here); pyproject.toml's dependency bound is ``TRANSFORMERS_RANGE`` (tests/test_compat.py checks both).

Not supported, measured with those tests:

- 5.17.0 is tested for text models (every text-model test passes; the lent GPU machine runs it). Its PIL image
  processor for Idefics3 (SmolVLM's) refuses to start without torchvision, which the kit does not install (it does
  not work beside the CPU torch), so there ``load_model`` refuses a SmolVLM clearly (``vision_problem``) and the
  SmolVLM tests are skipped with that reason.
- 4.57 (the last 4.x): the tests stop at loading the embedded model and then at the stages. Supporting it needs
  version differences in the converter (safetensors metadata, which name a tied embedding is saved under), in
  ``generate_processors`` (``_prepare_special_tokens`` takes no ``batch_size``), in reading a GenerationConfig
  (4.x fills unset sampling fields with their defaults, 5.x leaves them None), in the Hub offline check and in the
  tiny test Idefics3; they belong here, one function each, once the package layout settles.
"""

from __future__ import annotations

from packaging.version import Version

__all__ = ["TRANSFORMERS_RANGE", "TRANSFORMERS_TESTED", "transformers_problem", "vision_problem"]

# Oldest, the one requirements.txt pins, newest on the registry when last checked. Keep them sorted.
TRANSFORMERS_TESTED = ("5.17.0", "5.23.0", "5.24.0")

VISION_WITHOUT_TORCHVISION = "5.18.0"
"""The first release whose PIL image processor for Idefics3 (SmolVLM) works without torchvision."""


def _range(tested: tuple[str, ...]) -> str:
    """From the oldest tested release to any patch release of the newest tested minor one."""
    newest = Version(tested[-1])
    return f">={tested[0]},<{newest.major}.{newest.minor + 1}"


TRANSFORMERS_RANGE = _range(TRANSFORMERS_TESTED)


def transformers_problem(version: str | None = None) -> tuple[str, str] | None:
    """None when transformers ``version`` (default: the installed one) is in the tested range; else (severity, what).

    severity "old": older than the oldest supported release; the kit refuses to load models (it would fail further
    on, at a less clear place). "new": newer than the tested ones; the kit works, but what it shows is unchecked.

    >>> transformers_problem("5.23.0") is None, transformers_problem("5.24.3") is None
    (True, True)
    >>> transformers_problem("5.25.0")[0], transformers_problem("4.57.6")[0]
    ('new', 'old')
    """
    if version is None:
        import transformers

        version = transformers.__version__
    span = f"{TRANSFORMERS_TESTED[0]} to {TRANSFORMERS_TESTED[-1]}"
    fix = f"pip install 'transformers{TRANSFORMERS_RANGE}'"
    if Version(version) < Version(TRANSFORMERS_TESTED[0]):
        return "old", f"transformers {version} is older than smolkit supports (tested: {span}); {fix}"
    if Version(version) >= Version(TRANSFORMERS_RANGE.rsplit("<", 1)[1]):
        return "new", (
            f"transformers {version} is newer than smolkit is tested with ({span}): the stages and explanations it "
            f"shows may no longer be what generate does (make test-compat checks); {fix}"
        )
    return None


def require_supported_transformers() -> None:
    """Refuse clearly, before any model work, when the installed transformers is older than the supported range."""
    problem = transformers_problem()
    if problem is not None and problem[0] == "old":
        raise RuntimeError(problem[1])


def vision_problem(version: str | None = None) -> str | None:
    """Why a SmolVLM (Idefics3) cannot load with transformers ``version`` (default: the installed one), or None.

    >>> vision_problem("5.23.0") is None
    True
    """
    import importlib.util

    if version is None:
        import transformers

        version = transformers.__version__
    if Version(version) >= Version(VISION_WITHOUT_TORCHVISION) or importlib.util.find_spec("torchvision"):
        return None
    return (
        f"transformers {version}'s image processor for SmolVLM (Idefics3) needs torchvision, which is not installed: "
        f"pip install 'transformers>={VISION_WITHOUT_TORCHVISION},<{TRANSFORMERS_RANGE.rsplit('<', 1)[1]}' "
        "(text models work with this version)"
    )
