"""The networks: the report's parameter counts, shapes, conditioning and the CPU preset's cost."""

import pytest
import torch

from mvnet.models import (
    CPU,
    REPORT,
    AudioEncoder,
    Discriminator,
    Generator,
    ModelConfigs,
    build,
    count_parameters,
    example_inputs,
    flops_per_item,
)


def test_report_parameter_counts_match_the_report():
    encoder, generator, discriminator = build(REPORT)
    assert count_parameters(encoder) == 11_263_402
    assert count_parameters(generator) == 8_114_037
    assert count_parameters(discriminator) == 7_496_385


@pytest.mark.parametrize("configs", [REPORT, CPU], ids=["report", "cpu"])
def test_shapes(configs):
    encoder, generator, discriminator = build(configs)
    assert encoder(torch.randn(2, 3, 128, 256)).shape == (2, 10)
    images = generator(torch.randn(2, 10), torch.randn(2, 100))
    assert images.shape == (2, 3, 64, 64)
    assert images.abs().max() <= 1
    assert discriminator(*example_inputs("discriminator", configs, batch=2)).shape == (2,)


def test_conditional_discriminator_needs_and_uses_the_embedding():
    d = Discriminator(CPU.discriminator).eval()
    images = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="conditional"):
        d(images)
    torch.nn.init.normal_(d.project.weight_orig if hasattr(d.project, "weight_orig") else d.project.weight)
    assert not torch.allclose(d(images, torch.zeros(2, 10)), d(images, torch.ones(2, 10)))


def test_film_feeds_the_embedding_into_every_block():
    g = Generator(CPU.generator).eval()
    films = [b.film for b in g.blocks]
    assert all(f is not None for f in films)
    for f in films:  # FiLM starts as identity; give it weight to see each block respond
        torch.nn.init.normal_(f.proj.weight, std=0.5)
    noise = torch.randn(1, 100)
    a = g(torch.zeros(1, 10), noise)
    b = g(torch.ones(1, 10), noise)
    assert (a - b).abs().mean() > 1e-3


def test_cpu_preset_is_much_cheaper_than_the_report():
    report = flops_per_item(Generator(REPORT.generator), *example_inputs("generator", REPORT))
    cpu = flops_per_item(Generator(CPU.generator), *example_inputs("generator", CPU))
    assert 5.0e9 < report < 5.5e9  # the report's generator: ~5.2 GFLOP per image
    assert cpu * 10 < report


def test_configs_round_trip_through_dicts():
    assert ModelConfigs.from_dict(CPU.to_dict()) == CPU
    assert ModelConfigs.from_dict(REPORT.to_dict()) == REPORT


def test_encoder_width_is_configurable():
    small = AudioEncoder(CPU.encoder)
    assert count_parameters(small) < count_parameters(AudioEncoder(REPORT.encoder)) / 3
