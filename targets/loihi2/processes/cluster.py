"""Cluster: every process of a network run as ONE Lava process in the CPU simulator.

Lava's simulator runs each process in its own OS process and synchronises all of them at every
step; for a 4-layer SpikingSSM that is ~20 processes, and on a CPU the synchronisation, not the
arithmetic, is most of a step (``benchmarks/results/lava_speed_*.md``).  A Cluster hosts the models
of its members -- ours and Lava's stock ``LIFReset`` and ``Dense``, each the class Lava's compiler
selects for the run configuration -- in one process, and every step runs their ``run_spk`` in
topological order.  Messages go through wires that copy Lava's channel semantics:

    send:  buffer[:] = data            (the channel holds the sender's port type)
    recv:  zeros(shape, receiver type) + buffer

A message sent at step t is received at step t, in the cluster as between processes (every model
sends and receives once per step; ``Dense`` sends its previous step's sum before it receives), so
each value appears at the same step with the same bits: tests/test_lava_target.py runs both ways.

The outputs read by the host (the readout and, when traces are recorded, every node) leave through
one OutPort, concatenated in float64 (exact for the 24-bit integers), flagged as Lava's external
pipe to the host (as an Extractor's is): the whole network is one Lava process.

On the chip each member is its own process on its own core (``plan``); a Cluster is how the
simulator runs them, never how they map, so ``Loihi2HwCfg`` runs never build one."""
from dataclasses import dataclass

import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.process.ports.ports import OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile.targets.loihi2.processes._base import FLOAT_OUT, report_error


@dataclass(frozen=True)
class Member:
    """One hosted process: its model class (as Lava's compiler selects it), the parameters and Var
    values Lava's builder would give the model, and its ports.  ``inputs``: in-port name -> the
    (member index, out-port name) feeding it (topological order: always an earlier member)."""
    name: str
    model: type
    proc_params: dict
    variables: dict                  # Var name -> (shape, initial value)
    shapes: dict                     # port name -> shape
    inputs: dict                     # in-port name -> (member index, out-port name)
    outputs: tuple                   # out-port names


class Cluster(AbstractProcess):
    """``members`` in topological order; ``taps``: the (member index, out-port name) pairs sent,
    concatenated, on ``taps_out`` every step, which is Lava's external pipe to the host
    (``receive``; ``buffer_size`` steps of it) when ``host`` -- what an Extractor does, without an
    Extractor's process and its synchronisation every step."""

    def __init__(self, *, members: list, taps: list, host: bool = True, buffer_size: int = 64):
        size = sum(int(np.prod(members[i].shapes[port])) for i, port in taps)
        super().__init__(members=members, taps=taps)
        self.taps_out = OutPort(shape=(max(size, 1),))
        if host:
            self.taps_out.flag_external_pipe(buffer_size=buffer_size)

    def receive(self) -> np.ndarray:
        """The next step's taps (blocks until the run has sent them)."""
        return self.taps_out.external_pipe_csp_recv_port.recv()


def cluster_of(processes: dict, feeds: dict, taps: list, run_cfg, buffer_size: int = 64) -> "Cluster":
    """A Cluster hosting ``processes`` (name -> a built Lava process, NOT connected), each with the
    model Lava's compiler selects for ``run_cfg``.  ``feeds``: name -> {in-port: (source name,
    out-port)} in topological order (``processes``' order); in-ports fed by nothing receive zeros,
    as in Lava.  ``taps``: the (name, out-port) pairs sent, side by side, to the host (none: the
    Cluster sends nothing anywhere)."""
    from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs

    index = {name: i for i, name in enumerate(processes)}
    members = []
    for name, proc in processes.items():
        inputs = {}
        for port in proc.in_ports:
            src = feeds.get(name, {}).get(port.name)
            if src is not None and index[src[0]] >= index[name]:
                raise ValueError(f"{name}.{port.name}: fed by {src[0]}, which comes later (not in topological order)")
            inputs[port.name] = None if src is None else (index[src[0]], src[1])
        members.append(Member(
            name=name, model=run_cfg.select(proc, ProcGroupDiGraphs._find_proc_models(proc)),
            proc_params=proc.proc_params, variables={v.name: (v.shape, v.init) for v in proc.vars},
            shapes={p.name: p.shape for p in list(proc.in_ports) + list(proc.out_ports)},
            inputs=inputs, outputs=tuple(p.name for p in proc.out_ports)))
    return Cluster(members=members, taps=[(index[name], port) for name, port in taps], host=bool(taps),
                   buffer_size=buffer_size)


class _Wire:
    """One out-port's channel: the sender's type, overwritten each step (every member sends once)."""

    def __init__(self, shape, dtype):
        self.buffer = np.zeros(shape, dtype)

    def send(self, data):
        if np.shape(data) != self.buffer.shape:                   # Lava's channel refuses it too
            raise AssertionError(f"data.shape={np.shape(data)} self._shape={self.buffer.shape} Mismatch")
        self.buffer[:] = data


class _Receiver:
    """An in-port: what ``PyInPortVectorDense.recv`` returns for one connection (none: zeros)."""

    def __init__(self, wire, shape, dtype):
        self.wire, self.shape, self.dtype = wire, shape, dtype

    def recv(self):
        total = np.zeros(self.shape, self.dtype)
        return total if self.wire is None else total + self.wire.buffer.copy()

    peek = recv


def _lava_type(model: type, name: str):
    for klass in model.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    raise TypeError(f"{model.__name__} declares no type for {name}")


def _host(member: Member, wires: list):
    """The member's model as Lava's ``PyProcessBuilder.build`` makes it, with wires for ports."""
    for guard in ("pre_guard", "lrn_guard", "post_guard"):
        if getattr(member.model, guard) is not getattr(PyLoihiProcessModel, guard):
            raise TypeError(f"{member.name}: {member.model.__name__} has management phases; a Cluster "
                            "runs the spiking phase only")
    model = member.model(member.proc_params)
    for port in member.outputs:
        wires[port] = _Wire(member.shapes[port], _lava_type(member.model, port).d_type)
        setattr(model, port, wires[port])
    for name, (shape, value) in member.variables.items():
        lt = _lava_type(member.model, name)
        if issubclass(lt.cls, np.ndarray):
            var = lt.cls(shape, lt.d_type)
            var[:] = value
        else:
            var = value
        setattr(model, name, var)
        setattr(model, "_" + name + "_p", lt.precision)
    return model


class _ClusterModel(PyLoihiProcessModel):
    taps_out = FLOAT_OUT

    def __init__(self, proc_params):
        super().__init__(proc_params)
        members = proc_params["members"]
        self.names = [m.name for m in members]
        self.wires = [{} for _ in members]                       # member -> out-port -> wire
        self.models = []
        for i, member in enumerate(members):
            model = _host(member, self.wires[i])
            for port, source in member.inputs.items():
                wire = None if source is None else self.wires[source[0]][source[1]]
                setattr(model, port, _Receiver(wire, member.shapes[port], _lava_type(member.model, port).d_type))
            self.models.append(model)
        self.taps = [self.wires[i][port] for i, port in proc_params["taps"]]
        self.nothing = np.zeros(1)

    def run_spk(self):
        i = 0
        try:
            for i, model in enumerate(self.models):
                model.time_step = self.time_step
                model.run_spk()
        except BaseException as exc:
            report_error(f"{self.names[i]} ({type(self.models[i]).__name__}, in a Cluster) at Lava step "
                         f"{self.time_step}", exc)
            raise
        out = np.concatenate([w.buffer.ravel() for w in self.taps]).astype(np.float64) if self.taps else self.nothing
        self.taps_out.send(out)


@implements(proc=Cluster, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class ClusterFixed(_ClusterModel):
    pass


@implements(proc=Cluster, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class ClusterFloat(_ClusterModel):
    pass
