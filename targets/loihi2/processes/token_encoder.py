"""TokenEncoder: token id -> its embedding row (the one-hot spike of the token selects one synapse
row of 8-bit mantissas at the stream's scale: a row select, no product)."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import FLOAT_OUT, INT_IN, INT_OUT, WindowedModel


class TokenEncoder(AbstractProcess):
    def __init__(self, *, table, table_float, window, delay, length):
        super().__init__(table=table, table_float=table_float, window=window, delay=delay, length=length)
        self.tokens_in = InPort(shape=(1,))
        self.stream_out = OutPort(shape=(table.shape[1],))


@implements(proc=TokenEncoder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class TokenEncoderFixed(WindowedModel):
    tokens_in = INT_IN
    stream_out = INT_OUT

    def step(self):
        token = int(self.tokens_in.recv()[0])
        table = self.proc_params["table"]
        row = arith.embed(token, table) if self.live() else 0 * table[0]
        self.stream_out.send(row.astype(np.int32))


@implements(proc=TokenEncoder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class TokenEncoderFloat(WindowedModel):
    tokens_in = INT_IN
    stream_out = FLOAT_OUT

    def step(self):
        token = int(self.tokens_in.recv()[0])
        table = self.proc_params["table_float"]
        self.stream_out.send(table[token] if self.live() else 0 * table[0])
