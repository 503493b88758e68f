"""Forward pre-hooks on the FFN second layers: they see exactly the tensor that layer receives."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from bids_app.features.loading import LanguageModel


class StopForward(Exception):
    """Raised by the hook of the last wanted layer: the rest of the forward pass is skipped."""


@contextlib.contextmanager
def ffn_hooks(lm: LanguageModel, on_input: Callable[[int, object], None],
              layers: Sequence[int] | None = None,
              stop_after_last: bool = False) -> Iterator[None]:
    """Call ``on_input(layer, tensor)`` with each (wanted) FFN second layer's input.

    With ``stop_after_last``, the hook of the last wanted layer raises :class:`StopForward`
    so that later blocks are not computed. Hooks are always removed.
    """
    handles = []
    wanted = range(len(lm.ffn_modules)) if layers is None else sorted(layers)
    last = max(wanted)
    try:
        for layer in wanted:
            module = lm.ffn_modules[layer]

            def hook(_module, args, _layer=layer):
                on_input(_layer, args[0])
                if stop_after_last and _layer == last:
                    raise StopForward
            handles.append(module.register_forward_pre_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
