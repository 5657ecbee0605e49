"""Maintainer script: train the built-in digits CNN on the digits:train split and store its
weights as edgeq/zoo/digits-cnn.npz (plain arrays). Deterministic; about 20 s on 2 cores.

    python scripts/train_digits_cnn.py
"""
import numpy as np
import torch

from edgeq.data import load_dataset
from edgeq.zoo import weights_path
from edgeq.zoo.nets import DigitsCNN, save_npz_state


def main(epochs: int = 40) -> None:
    torch.manual_seed(0)
    train, evals = load_dataset("digits:train"), load_dataset("digits:eval")
    x, y = torch.from_numpy(train.inputs["x"]), torch.from_numpy(train.labels)
    model = DigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * 22)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            # Light augmentation: one-pixel shifts keep the net from memorising.
            xb = torch.roll(x[idx], shifts=tuple(torch.randint(-1, 2, (2,), generator=g)),
                            dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(evals.inputs["x"])).argmax(1).numpy()
    print(f"digits:eval top-1 {np.mean(pred == evals.labels) * 100:.2f}% on {len(pred)} samples")
    save_npz_state(model, weights_path("digits-cnn"))


if __name__ == "__main__":
    main()
