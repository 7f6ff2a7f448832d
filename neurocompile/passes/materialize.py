"""Turn each SSM's trained parameters into the kernel the chip streams (float64), D included:
S4D (SpikingSSM) or S4 DPLR (P-SpikeSSM, from the dense real recurrence, never diagonalised).

Causal SSM: L taps, output read at once (lag 0), D in tap 0.  Two-sided (bidirectional) SSM:
y[t] = sum_{s<=t} k0[t-s] u[s] + sum_{s>t} k1[s-t-1] u[s] + D u[t] needs the future, so it is
streamed as one causal kernel of 2L - 1 taps, c = [k1[L-2], ..., k1[0], k0[0], ..., k0[L-1]],
whose output for step t is read L - 1 steps late: c * u at t + L - 1 is exactly y[t].

With ``--ssm-lowering recurrent`` a causal diagonal (S4D) layer becomes an ``SSMRecurrent`` instead:
its modes a = exp(dt A), b = (exp(dt A) - 1) / A, c = C (B folded in), D -- the recurrence whose
impulse response is the kernel above.  Two-sided and DPLR layers keep the convolution; the reason is
recorded per layer in ``graph.meta['ssm_lowering']``.
"""
import numpy as np

from ..errors import UnsupportedModelError
from ..ir import DPLRKernelParams, Graph, S4DKernelParams, SSMConv, SSMRecurrent

SSM_LOWERINGS = ("conv", "recurrent")


def two_sided_as_causal(k0: np.ndarray, k1: np.ndarray, D: np.ndarray):
    """(kernel (H, 2L-1), lag) streaming the two-sided convolution with kernels k0, k1 (H, L)."""
    L = k0.shape[1]
    kernel = np.concatenate([k1[:, L - 2::-1] if L > 1 else k1[:, :0], k0], axis=1)
    kernel[:, L - 1] += D
    return kernel, L - 1


def s4d_kernel(op: S4DKernelParams, params: dict, L: int) -> np.ndarray:
    import torch

    from ..models.ssm_kernel import materialize_kernel
    return materialize_kernel(params, op.variant, L, dtype=torch.float64).numpy()


def dplr_kernel(op: DPLRKernelParams, params: dict, L: int) -> np.ndarray:
    from ..models.dplr_kernel import materialize_dplr_kernel
    return materialize_dplr_kernel(params, L).numpy()


KERNELS = {S4DKernelParams: s4d_kernel, DPLRKernelParams: dplr_kernel}    # (ch, H, L) float64 taps


def s4d_modes(op: S4DKernelParams, params: dict) -> SSMRecurrent:
    """The discretised (ZOH) modes of a causal S4D layer: the recurrence behind ``s4d_kernel``."""
    import torch

    from ..models.ssm_kernel import continuous_params
    dt, A, C = continuous_params(params, op.variant, dtype=torch.float64)
    dtA = (A * dt.unsqueeze(-1)).numpy()
    A = A.numpy()
    H, M = dtA.shape
    return SSMRecurrent(a=np.exp(dtA), b=(np.exp(dtA) - 1.0) / A, c=C.numpy()[0], D=np.asarray(op.D, np.float64),
                        e=np.zeros((H, M), complex), d0=np.zeros(H))


def recurrence_refusal(op) -> str:
    """Why a layer cannot run as a diagonal recurrence ('' when it can)."""
    if isinstance(op, DPLRKernelParams):
        return ("S4 DPLR kernel (P-SpikeSSM): not diagonal, and diagonalising it is numerically unsafe, so it "
                "stays a convolution")
    if op.bidirectional:
        return "two-sided (bidirectional) kernel: a causal recurrence cannot read future inputs, so it stays a convolution"
    return ""


def streamed_kernel(op, L: int, params: dict | None = None):
    """An S4D / DPLR parameter node -> (kernel (H, K) float64, lag): the convolution the chip streams,
    D in its present tap (``finetune``'s quantisers round this same array)."""
    import torch

    if params is None:
        params = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in op.params.items()}
    k = KERNELS[type(op)](op, params, L)
    if op.bidirectional:
        return two_sided_as_causal(k[0], k[1], op.D)
    kernel = k[0].copy()
    kernel[:, 0] += op.D                       # y = K*u + D u == (K + D delta) * u
    return kernel, 0


def materialize_kernels(graph: Graph, ssm_lowering="conv") -> Graph:
    """``ssm_lowering``: 'conv' or 'recurrent' for every layer, or {SSM node: (lowering, reason)}."""
    import torch

    per_layer = ssm_lowering if isinstance(ssm_lowering, dict) else {}
    if not per_layer and ssm_lowering not in SSM_LOWERINGS:
        raise ValueError(f"unknown SSM lowering {ssm_lowering!r} (choose from {', '.join(SSM_LOWERINGS)})")
    graph = graph.copy()
    L = int(graph.meta["config"]["l_max"])
    chosen = {}
    for name in list(graph.nodes_of(*KERNELS)):
        op = graph.op(name)
        params = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in op.params.items()}
        refusal = recurrence_refusal(op)
        want, why = per_layer.get(name, (ssm_lowering, ""))
        if want == "recurrent" and not refusal:
            modes = s4d_modes(op, params)
            if not all(np.isfinite(v).all() for v in (modes.a, modes.b, modes.c)):
                raise UnsupportedModelError(f"{graph.meta.get('source') or 'model'}: {name}: the SSM's discretised "
                                            "modes are not finite (dt or A overflow float64)")
            graph.set_op(name, modes)
            chosen[name] = {"lowering": "recurrent",
                            "reason": why or "causal diagonal S4D kernel (--ssm-lowering recurrent)"}
            continue
        chosen[name] = {"lowering": "conv",
                        "reason": why or (refusal if want == "recurrent" else "--ssm-lowering conv")}
        try:
            kernel, lag = streamed_kernel(op, L, params)
        except torch.linalg.LinAlgError as exc:      # a singular discretisation: parameters no training gives
            raise UnsupportedModelError(f"{graph.meta.get('source') or 'model'}: {name}: the SSM kernel cannot be "
                                        f"materialised ({str(exc).splitlines()[0][:160]})") from None
        H = kernel.shape[0]
        if not np.isfinite(kernel).all():
            raise UnsupportedModelError(f"{graph.meta.get('source') or 'model'}: {name}: the kernel computed from its "
                                        "SSM parameters is not finite (dt or A overflow float64)")
        graph.set_op(name, SSMConv(kernel, lag, np.zeros((H, 0))))
    graph.meta["ssm_lowering"] = chosen
    return graph
