"""The protocol line above a dataset's comparison: stated from the records, compared with the paper's preset."""

from __future__ import annotations

from bench.report.protocol import paper_downstream, protocol_line


def record(patch=None, **downstream) -> dict:
    protocol = {
        "arch": "small_cnn",
        "n_seeds": 3,
        "lr": 1e-3,
        "batch_size": 64,
        "max_epochs": 8,
        "patience": 2,
        "remedies": ["reweight", "crt"],
        "with_augmentation": ["crt"],
        **downstream,
    }
    config = {} if patch is None else {"patch_size": patch}
    return {
        "backbone": "flux",
        "train": {"steps": 600, "batch_size": 32, "backbone_config": config},
        "sampler": {"solver": "euler", "nfe": 32},
        "details": {"downstream": {"protocol": protocol}},
    }


def test_the_line_states_training_sampler_and_a_downstream_protocol_that_is_not_the_papers():
    line = protocol_line([record(patch=4), record(patch=4)])
    assert line.startswith(
        "Protocol: 600 training steps of batch 32, FLUX 4 x 4 patches; euler sampler, 32 steps; "
        "downstream small_cnn, 3 classifier seed(s), <= 8 epochs (patience 2), remedies reweight, "
        "crt, with augmentation crt (not the paper's protocol: "
    )
    assert (
        "arch, batch_size, lr, max_epochs, patience differ" in line
        and "n_seeds" not in line.split("protocol: ")[-1]
    )


def test_the_papers_downstream_protocol_is_not_flagged_and_records_that_disagree_state_nothing():
    paper = record(**paper_downstream())
    assert paper_downstream()["arch"] == "resnet50"
    line = protocol_line([paper])
    assert "FLUX 2 x 2 patches" in line and "not the paper's" not in line  # no backbone_config: FLUX's 2
    assert "downstream" not in protocol_line([record(), record(max_epochs=9)])  # two protocols: none stated
    assert protocol_line([{}]) is None
