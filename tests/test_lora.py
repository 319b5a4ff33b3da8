"""ftlib.lora on a tiny model: fresh adapters change nothing, a saved adapter reloads exactly, and wrapping or
loading adapters prints no warning about peft's own use of deprecated transformers attributes."""
import warnings

import torch

from ftlib.lora import add_lora, load_adapter
from ftlib.tiny import tiny_llama


def test_fresh_adapters_leave_logits_unchanged_and_reload_exactly(tmp_path):
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        before = tiny_llama(vocab_size=64)(ids).logits
        wrapped = add_lora(tiny_llama(vocab_size=64), r=4, alpha=8)
        assert torch.equal(wrapped(ids).logits, before)  # B = 0
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a "trained" adapter
        trained = wrapped(ids).logits
    assert not torch.allclose(trained, before)
    wrapped.save_pretrained(tmp_path)
    with torch.no_grad():
        reloaded = load_adapter(tiny_llama(vocab_size=64), str(tmp_path))(ids).logits
    torch.testing.assert_close(reloaded, trained)


def test_wrapping_and_loading_adapters_emit_no_future_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_lora(tiny_llama(vocab_size=64), r=4).save_pretrained(tmp_path)
        load_adapter(tiny_llama(vocab_size=64), str(tmp_path))
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
