import torch, onnx, sys, os
from torch import nn
class Block(nn.Module):
    def __init__(s):
        super().__init__(); s.norm = nn.LayerNorm(16); s.fc = nn.Linear(16, 16)
    def forward(s, x):
        h = s.norm(x)
        return x + torch.relu(s.fc(h))
class Net(nn.Module):
    def __init__(s):
        super().__init__(); s.layer = nn.ModuleList([Block(), Block()]); s.head = nn.Linear(16, 4)
    def forward(s, x):
        for b in s.layer:
            x = b(x)
        return s.head(x).softmax(-1)
torch.manual_seed(0)
m = Net().eval(); x = torch.randn(2, 16)
out = os.environ["OUT"]
p = torch.onnx.export(m, (x,), dynamo=True, input_names=["x"], output_names=["y"], opset_version=18)
p.save(f"{out}/tiny_dynamo.onnx", external_data=False)
torch.onnx.export(m, (x,), f"{out}/tiny_ts.onnx", dynamo=False, input_names=["x"], output_names=["y"], opset_version=17)
print(torch.__version__)
mm = onnx.load(f"{out}/tiny_dynamo.onnx")
for n in mm.graph.node[:3]:
    print(n.name, n.op_type, {p.key: p.value for p in n.metadata_props})
