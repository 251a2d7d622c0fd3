"""Python onnx doing the same job as `neftune patch` (hf mode): onnx.load, the same edits, onnx.save.

Usage: python3 bench/python_patch.py <in.onnx> <out.onnx> [--no-external-data]
       python3 bench/python_patch.py <in.onnx> --inspect [--no-external-data]
--no-external-data loads with load_external_data=False (the weights stay in their files, as neftune
leaves them); --inspect loads, finds the token lookup and prints a summary, as `neftune inspect`.
"""
import json
import sys

import onnx
from onnx import TensorProto, helper

model = onnx.load(sys.argv[1], load_external_data='--no-external-data' not in sys.argv)
graph = model.graph
table = None
inputs = {i.name for i in graph.input}
for node in graph.node:  # the token lookup: Gather on the largest 2-D initializer, fed by a graph input
    if node.op_type == 'Gather' and node.input[1] in inputs:
        table = node
        break
assert table is not None, 'no token lookup'
if sys.argv[2] == '--inspect':
    print(json.dumps({'nodes': len(graph.node), 'initializers': len(graph.initializer), 'lookup': table.name}))
    sys.exit(0)
orig = table.output[0]
clean = 'neftune__%s__clean' % orig
table.output[0] = clean
p = 'neftune__%s__' % orig
const = lambda name, t: helper.make_node('Constant', [], [p + name + '_output'], name=p + name, value=t)
new = [
    const('alpha', helper.make_tensor('a', TensorProto.FLOAT, [], [5.0])),
    helper.make_node('Shape', [clean], [p + 'shape_output'], name=p + 'shape'),
    helper.make_node('RandomUniformLike', [clean], [p + 'uniform_output'], name=p + 'uniform', dtype=1, low=-1.0, high=1.0),
    const('start', helper.make_tensor('s', TensorProto.INT64, [1], [-2])),
    const('end', helper.make_tensor('e', TensorProto.INT64, [1], [2**63 - 1])),
    const('axes', helper.make_tensor('x', TensorProto.INT64, [1], [0])),
    helper.make_node('Slice', [p + 'shape_output', p + 'start_output', p + 'end_output', p + 'axes_output'], [p + 'dims_output'], name=p + 'dims'),
    helper.make_node('Cast', [p + 'dims_output'], [p + 'dims_float_output'], name=p + 'dims_float', to=1),
    helper.make_node('ReduceProd', [p + 'dims_float_output'], [p + 'ld_output'], name=p + 'ld', keepdims=0),
    helper.make_node('Sqrt', [p + 'ld_output'], [p + 'sqrt_output'], name=p + 'sqrt'),
    helper.make_node('Div', [p + 'alpha_output', p + 'sqrt_output'], [p + 'scale_output'], name=p + 'scale'),
    helper.make_node('Mul', [p + 'uniform_output', p + 'scale_output'], [p + 'noise_output'], name=p + 'noise'),
    helper.make_node('Add', [clean, p + 'noise_output'], [orig], name=p + 'add'),
]
at = list(graph.node).index(table) + 1
for i, n in enumerate(new):
    graph.node.insert(at + i, n)
entry = model.metadata_props.add()
entry.key = 'onnx_neftune.patch'
entry.value = json.dumps({'tool': 'python-baseline'})
onnx.save(model, sys.argv[2])
