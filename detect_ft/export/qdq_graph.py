"""Exact rewrites of quantised (QDQ) ONNX graphs that onnxruntime's own QDQ fusion leaves undone.

:func:`simplify_qdq` runs on the output of ``quantize_static`` (see :mod:`detect_ft.export.quantize`); every
rewrite keeps the graph's outputs bit for bit (tests/test_export.py checks it with onnxruntime).
"""

from __future__ import annotations

import numpy as np


def simplify_qdq(graph) -> dict[str, int]:
    """Two exact rewrites of a QDQ graph (in place) that onnxruntime's QDQ fusion does not make itself.

    * ``DequantizeLinear -> Pad(0) -> QuantizeLinear`` with the same scale and zero point on both sides
      becomes a ``Pad`` of the uint8 tensor with the zero point as pad value (TF-"same" padding in
      EfficientNet-Lite: otherwise five float round trips of stride-2 feature maps).
    * ``Shape(DequantizeLinear(x))`` becomes ``Shape(x)``: the head's reshapes only read the shape, and
      the DequantizeLinear that fed them is dropped when nothing else reads it.

    Returns:
        ``{"pad": n, "shape": n}``: how many of each were rewritten.
    """
    initializers = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    dropped = []
    for pad in [node for node in graph.node if node.op_type == "Pad"]:
        quantize = _pad_on_uint8(graph, pad, initializers, producer)
        if quantize is not None:
            dropped.append(quantize)
    shapes = 0
    for shape in [node for node in graph.node if node.op_type == "Shape"]:
        dq = producer.get(shape.input[0])
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] not in initializers:
            shape.input[0] = dq.input[0]
            shapes += 1
    for node in dropped:
        graph.node.remove(node)
    _remove_unread_qdq(graph)
    return {"pad": len(dropped), "shape": shapes}


def _pad_on_uint8(graph, pad, initializers: dict, producer: dict):
    """Rewire ``DequantizeLinear -> pad -> QuantizeLinear`` into a Pad of the quantised tensor by its zero
    point when that is exact (zero padding, same scale and zero point on both sides); returns the
    QuantizeLinear node that became unused, or None when ``pad`` does not qualify (left untouched)."""
    dq = producer.get(pad.input[0])
    users = [node for node in graph.node if pad.output[0] in node.input]
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in initializers or len(dq.input) < 3:
        return None
    if len(users) != 1 or users[0].op_type != "QuantizeLinear" or len(users[0].input) < 3:
        return None
    q = users[0]
    if next((a.s for a in pad.attribute if a.name == "mode"), b"constant") != b"constant":
        return None
    value = _constant(pad.input[2], initializers, producer) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
    params = [_constant(name, initializers, producer) for name in (dq.input[1], q.input[1], dq.input[2], q.input[2])]
    if value is None or np.any(value != 0) or any(p is None for p in params) or dq.input[2] not in initializers:
        return None
    if not (np.array_equal(params[0], params[1]) and np.array_equal(params[2], params[3]) and params[2].size == 1):
        return None
    zero_point = initializers[dq.input[2]]
    if list(zero_point.dims) not in ([], [1]) or initializers.get(q.input[2]) is None:
        return None
    if initializers[q.input[2]].data_type != zero_point.data_type:
        return None
    pad.input[:] = [dq.input[0], pad.input[1], dq.input[2]]  # pad the quantised tensor with its zero point
    pad.output[:] = [q.output[0]]
    return q


def _constant(name: str, initializers: dict, producer: dict):
    """The value of ``name`` when it is an initializer, or the float value of a DequantizeLinear of one;
    None otherwise."""
    from onnx import numpy_helper

    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = producer.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and all(n in initializers for n in node.input):
        x, scale, *zp = (numpy_helper.to_array(initializers[n]).astype(np.float64) for n in node.input)
        return (x - (zp[0] if zp else 0)) * scale
    return None


def _remove_unread_qdq(graph) -> None:
    """Remove the QuantizeLinear/DequantizeLinear nodes whose output nothing reads (repeatedly: one may feed
    another)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [
            n for n in graph.node if n.op_type in ("DequantizeLinear", "QuantizeLinear") and n.output[0] not in used
        ]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)
