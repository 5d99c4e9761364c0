"""The tiny BERT the hf tests run on, and the texts they encode: built here, nothing downloaded.

A module of its own (not conftest.py) so that test modules import it by a name no other test
folder uses.
"""

from __future__ import annotations

import torch

WORDS = (
    "the a an of to and in is it that was for on are with as his they be at one have this from or had "
    "by not word but what some we can out other were all there when up use your how said each she "
    "which do their time if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no most people my over know "
    "water than call first who may down side been now find any new work part take get place made "
    "live where after back little only round man year came show every good me give our under name "
    "very through just form sentence great think say help low line differ turn cause much mean "
    "before move right boy old too same tell does set three want air well also play small end put"
).split()

TEXTS = [" ".join(WORDS[(7 * i + 3 * k) % len(WORDS)] for k in range(3 + (i * 5) % 17)) for i in range(96)]


def tiny_bert(vocab_size: int, layers: int = 4, seed: int = 0):
    """A randomly initialised BertModel: hidden 32, 2 heads, ``layers`` layers, in eval mode."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.1,  # attention peaky enough that padding leaking in shows
    )
    return BertModel(config).eval()
