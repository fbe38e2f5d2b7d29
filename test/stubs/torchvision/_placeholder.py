"""Factory for placeholder classes that fail loudly when used."""

from __future__ import annotations


def placeholder(name: str) -> type:
    """Return a class named ``name`` that raises when instantiated."""

    def __init__(self, *args, **kwargs):  # noqa: N807
        raise NotImplementedError(
            f'torchvision.{name} is not available: this is the dsseg test stand-in; '
            'install the real torchvision to use it'
        )

    return type(name.rsplit('.', 1)[-1], (), {'__init__': __init__})
