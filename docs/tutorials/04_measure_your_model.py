"""Tutorial 4: measure progressive collapse in your own PyTorch model.

Run it with ``.venv/bin/python docs/tutorials/04_measure_your_model.py`` (about 10 s on a CPU);
the test suite executes it too.

The recipe for any model: register forward hooks on the layers you want, feed each hooked
batch (flattened to ``(batch, d)``) to one :class:`ufm.metrics.CollapseAccumulator` per layer,
and run the data through the model twice -- pass 1 gathers class counts, means and scatter,
pass 2 (with the means frozen) the nearest-class-centre accuracy and NC1. No feature is ever
stored: memory is ``O(K d)`` per layer whatever the number of samples.
Then the same in one call with :func:`resnet_pfc.measure.measure`.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader

from resnet_pfc.data import load_dataset
from resnet_pfc.measure import measure
from ufm.metrics import CollapseAccumulator, collapse_metrics

torch.manual_seed(0)

# --- 1. Data: scikit-learn's handwritten digits, shipped offline --------------------------
# 1347 training images of 8 x 8 pixels, 10 classes, normalised; x (N, 1, 8, 8), y (N,).
train_set = load_dataset("digits", split="train")
K = train_set.num_classes
train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
eval_loader = DataLoader(train_set, batch_size=512)  # order and batch size do not matter


# --- 2. Your model: a small residual MLP (any nn.Module works) ----------------------------
class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, h):
        return h + self.f(h)


model = nn.Sequential(
    nn.Flatten(),
    nn.Linear(64, 128),  # "1": the stem; its output is the first measured layer
    Block(128),  # "2"
    Block(128),  # "3"
    Block(128),  # "4"
    nn.Linear(128, K),  # "5": the classifier
)
layers = ["1", "2", "3", "4"]  # names as in model.named_modules()

opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
for _epoch in range(30):
    model.train()
    for x, y in train_loader:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
print(f"trained 30 epochs, last batch loss {loss.item():.4f}")


# --- 3. Measure by hand: hooks + accumulators, two passes ---------------------------------
def measure_by_hand(model, loader, layers, K):
    modules = dict(model.named_modules())
    accs = {name: CollapseAccumulator(K) for name in layers}
    current = {}  # labels of the batch being run, read by the hooks

    def hook(name):
        def fn(module, inputs, out):  # must return None: a returned value replaces the output
            accs[name].update(out.detach().flatten(1), current["y"])

        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    model.eval()
    try:
        with torch.no_grad():
            for pass_ in (1, 2):
                for x, y in loader:
                    current["y"] = y
                    model(x)
                if pass_ == 1:
                    for acc in accs.values():
                        acc.end_first_pass()
    finally:
        for h in handles:
            h.remove()
    return {name: acc.compute() for name, acc in accs.items()}


by_hand = measure_by_hand(model, eval_loader, layers, K)
print("\nlayer    pfc1     pfc2     pfc3     nc1")
for name, m in by_hand.items():
    print(f"{name:>5} {m['pfc1']:8.4f} {m['pfc2']:8.4f} {m['pfc3']:8.4f} {m['nc1']:8.4f}")
# Progressive collapse: the metrics fall from the stem towards the last block.

# --- 4. The same with resnet_pfc's helper (one call, same two passes) ---------------------
helper = measure(model, eval_loader, layers, K).layers
for name in layers:
    for key in ("pfc1", "pfc2", "pfc3", "nc1"):
        a, b = by_hand[name][key], helper[name][key]
        assert abs(a - b) <= 1e-9 * max(1.0, abs(b)), (name, key, a, b)
print("resnet_pfc.measure.measure gives the same numbers")

# --- 5. Sanity check on this small set: store the last layer's features and compare -------
with torch.no_grad():
    model.eval()
    feats = model[:5](train_set.x)  # output of layer "4", shape (N, 128)
stored = collapse_metrics(feats, train_set.y, K=K)
assert abs(stored["pfc1"] - by_hand["4"]["pfc1"]) <= 1e-5 * stored["pfc1"]
print(
    f"stored features of layer 4: pfc1 = {stored['pfc1']:.4f} (streamed: {by_hand['4']['pfc1']:.4f})"
)

# --- 6. For the paper's ResNets, everything above is built in ------------------------------
# resnet_pfc.models.paper_model("digits") is a fully connected ResNet whose measured layers
# (stem output and every block) are listed by model.measured_layers(); training with
# measurement every few epochs, the geodesic-line prediction, CSVs, figures and a report are
#     python -m resnet_pfc train --dataset digits --epochs 40 --out runs/digits
