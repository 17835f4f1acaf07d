"""The embedding ResUNet: unit embeddings, any input size, the paper's student widths."""

from __future__ import annotations

import torch

from medistill.metrics import count_parameters
from medistill.models import classification_models, create_model, instance_models


def test_unit_embeddings_and_foreground_any_size(single_thread):
    net = create_model("resunet_embedding", 2, widths=[2, 4, 8], embedding_dim=5).eval()
    for size in (16, 23):
        with torch.no_grad():
            out = net(torch.randn(1, 3, size, size))
            emb, fg = net.embed(torch.randn(1, 3, size, size))
        assert out.shape == (1, 6, size, size)
        assert emb.shape == (1, 5, size, size) and fg.shape == (1, 1, size, size)
        assert torch.allclose(emb.norm(dim=1), torch.ones(1, size, size), atol=1e-5)
        assert torch.allclose(out[:, :5].norm(dim=1), torch.ones(1, size, size), atol=1e-5)


def test_registry_and_student_under_two_percent_of_the_teacher():
    assert "resunet_embedding" in instance_models()
    assert "resunet_embedding" not in classification_models()
    teacher = create_model("resunet_embedding", 2)  # widths 32..512
    student = create_model("resunet_embedding", 2, widths=[4, 8, 16, 32, 64])
    assert count_parameters(student) / count_parameters(teacher) < 0.02
    assert list(student.eval().features(torch.randn(1, 3, 16, 16))) == [
        "enc1", "enc2", "enc3", "enc4", "enc5", "dec4", "dec3", "dec2", "dec1", "embedding",
        "foreground"]
