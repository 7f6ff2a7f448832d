"""Write tests/fixtures/official/authors_mc_passes.json: the float pass the authors' own code computed
for each official P-SpikeSSM fixture.

Their driver drew every uniform with torch seed 7 (the fixture's ``u_layer*`` tensors are exactly
``torch.manual_seed(7)`` followed by their rand_like draws, block by block, in their storage order;
tests/test_scaleout.py checks that), so the fixture's ``logits`` are their pass with seed 7 over the
whole fixture batch.  Predictions are their argmax; the labels are fixed (sample index mod classes)
so that an accuracy can be stated; nothing here runs our model.

    .venv/bin/python scripts/authors_mc_passes.py
"""
import json
import os

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "official")
out = {}
for name in ("pspikessm_bidirectional_postnorm_bn", "pspikessm_unidirectional_prenorm_bn"):
    logits = np.load(os.path.join(HERE, name + ".expected.npz"))["logits"]
    pred = logits.argmax(1)
    labels = np.arange(len(pred)) % logits.shape[1]
    out[name] = {"seed": 7, "predictions_seed_7": pred.tolist(), "labels": labels.tolist(),
                 "float_accuracy_seed_7": float((pred == labels).mean()),
                 "source": f"{name}.expected.npz logits (the authors' code, float64, uniforms of torch seed 7)"}
with open(os.path.join(HERE, "authors_mc_passes.json"), "w") as fh:
    json.dump(out, fh, indent=1)
    fh.write("\n")
print(json.dumps(out, indent=1))
