"""Vanilla flow matching: the reference method, class tokens and an N(0, I) source."""

from bench.method import Method
from bench.registry import register_method


@register_method("fm")
class FlowMatching(Method):
    """Vanilla conditional flow matching (Lipman et al., 2023); all behaviour is the base class."""
