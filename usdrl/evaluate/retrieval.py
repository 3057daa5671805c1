"""kNN retrieval (SPEC.md 5): cosine k-nearest neighbours against the training set, as chunked matrix
products on the device; k = 1 by default; majority vote for k > 1 (ties to the smaller class)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def knn_predict(train_features: np.ndarray | torch.Tensor, train_labels: np.ndarray | torch.Tensor,
                query_features: np.ndarray | torch.Tensor, k: int = 1, chunk_size: int = 4096,
                device: torch.device = torch.device("cpu")) -> np.ndarray:
    """Predicted labels (Q,) of the queries by cosine similarity to the L2-normalised training features."""
    train = F.normalize(torch.as_tensor(train_features, dtype=torch.float32, device=device), dim=1)
    labels = torch.as_tensor(train_labels, dtype=torch.long, device=device)
    queries = F.normalize(torch.as_tensor(query_features, dtype=torch.float32, device=device), dim=1)
    if k < 1 or k > len(train):
        raise ValueError(f"k must lie in 1..{len(train)}, got {k}")
    num_classes = int(labels.max()) + 1
    predictions = []
    for start in range(0, len(queries), chunk_size):
        similarity = queries[start:start + chunk_size] @ train.T  # (q, N_train)
        neighbours = similarity.topk(k, dim=1).indices  # (q, k)
        votes = F.one_hot(labels[neighbours], num_classes).sum(dim=1)  # (q, classes)
        predictions.append(votes.argmax(dim=1))  # first maximum: ties go to the smaller class
    return torch.cat(predictions).cpu().numpy()


def knn_accuracy(train_features, train_labels, test_features, test_labels, k: int = 1, chunk_size: int = 4096,
                 device: torch.device = torch.device("cpu")) -> float:
    """The fraction of test samples (N_test, D) whose kNN prediction against the training features (N_train, D)
    (``knn_predict``) is their label."""
    predicted = knn_predict(train_features, train_labels, test_features, k, chunk_size, device)
    return float((predicted == np.asarray(test_labels)).mean())
