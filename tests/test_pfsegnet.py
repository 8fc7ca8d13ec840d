"""pfsegnet.py: PFSegNet's shapes, gradients and losses through the segmenter interface; the dual
point sampler and the PointFlow scatter checked against values written out by hand; the edge
target; the parameter count at ResNet-50 against the reference code's model."""
import pytest
import torch
import torch.nn.functional as F

import fpn
import pfsegnet

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors on a shared CPU (conftest)


def _labels(B, H, W):
    """Two rectangles on a background, two ignore rows: every label map has edges and non-edges
    (random labels would make every pixel an edge, and the balanced edge loss 0)."""
    y = torch.zeros(B, H, W, dtype=torch.long)
    y[:, H // 4:H // 2, W // 8:3 * W // 4] = 3
    y[:, H // 2:, W // 2:] = 1
    y[:, :2] = 255
    return y


@pytest.mark.parametrize('shape', [(2, 3, 32, 32), (1, 3, 64, 64)])
def test_logits_at_input_size(shape):
    torch.manual_seed(0)
    model = pfsegnet.PFSegNet(5, depth=18).eval()  # eval: a batch of 1 is fine for BN there
    with torch.no_grad():
        logits = model(torch.randn(shape))
    assert logits.shape == (shape[0], 5) + shape[2:]
    assert torch.isfinite(logits).all()


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = pfsegnet.PFSegNet(5, depth=18).train()
    x, y = torch.randn(2, 3, 32, 32), _labels(2, 32, 32)
    logits, loss = model(x, y)
    loss.backward()
    # The edge heads' only gradient is the edge loss: top-k indices carry none.
    assert loss > fpn.segmentation_loss(logits, y) + 1  # the three edge losses (x25) are in
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


def test_eval_loss_is_plain_cross_entropy():
    torch.manual_seed(0)
    model = pfsegnet.PFSegNet(4, depth=18).eval()
    x, y = torch.randn(2, 3, 32, 32), _labels(2, 32, 32)
    with torch.no_grad():
        logits, loss = model(x, y, ignore_index=255)
        assert torch.equal(logits, model(x))
    assert torch.allclose(loss, F.cross_entropy(logits, y, ignore_index=255))


def test_salient_points_are_cell_maxima_and_clamped():
    certainty = torch.tensor([[0.1, 0.9, 0.2, 0.3],
                              [0.4, 0.0, 0.8, 0.1],
                              [0.7, 0.2, 0.0, 0.1],
                              [0.3, 0.6, 0.5, 0.2]])[None, None]  # (1, 1, 4, 4)
    indices, cell_max = pfsegnet.salient_points(certainty, grid_size=2)
    # the maximum of each 2x2 quadrant, quadrants in row-major order: (0,1), (1,2), (2,0), (3,2)
    assert indices.tolist() == [[1, 6, 8, 14]]
    assert torch.allclose(cell_max, torch.tensor([[[[0.9, 0.8], [0.7, 0.5]]]]))
    # a 3x3 map under the 14x14 grid: every pixel is a point exactly once (no repeats)
    indices, _ = pfsegnet.salient_points(torch.rand(2, 1, 3, 3), grid_size=14)
    assert indices.shape == (2, 9)
    assert all(sorted(row) == list(range(9)) for row in indices.tolist())


def test_boundary_points_are_top_k_and_clamped():
    edge_map = torch.tensor([[0.0, 5.0, 1.0],
                             [9.0, 2.0, 7.0]])[None, None]  # (1, 1, 2, 3)
    assert pfsegnet.boundary_points(edge_map, 3).tolist() == [[3, 5, 1]]  # 9, 7, 5
    indices = pfsegnet.boundary_points(edge_map, 128)  # k clamped to the 6 pixels
    assert indices.shape == (1, 6) and sorted(indices[0].tolist()) == list(range(6))


def test_point_flow_changes_only_the_sampled_points():
    torch.manual_seed(0)
    C, h, w = 8, 4, 6  # not square: a row/column mix-up sends points to the wrong pixels
    module = pfsegnet.PointFlowModule(C, match_dim=4, maxpool_size=2, avgpool_size=2,
                                      edge_points=3).eval()
    high, low = torch.randn(1, C, h, w), torch.randn(1, C, 2 * h, 2 * w)
    with torch.no_grad():
        out, edge_pred = module(high, low)
        certainty = module.point_matcher(module.down_h(high), module.down_l(low))[0, 0]
    high, low = high[0], low[0]  # (C, h, w), (C, 2h, 2w)
    pixels = [(r, c) for r in range(h) for c in range(w)]

    def flow(high_feats, low_feats):
        """PointFlow at points, one by one: low_j + sum_i softmax_i(<low_j, high_i>) high_i."""
        fused = []
        for low_j in low_feats:
            weights = torch.stack([low_j @ high_i for high_i in high_feats]).softmax(0)
            fused.append(low_j + sum(wt * high_i for wt, high_i in zip(weights, high_feats)))
        return fused

    expected = low.clone()
    # boundary points: the 3 largest edge logits; the low feature is the 2x2 block's mean
    edge_rc = sorted(pixels, key=lambda rc: -edge_pred[0, 0][rc].item())[:3]
    fused = flow([high[:, r, c] for r, c in edge_rc],
                 [low[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2].mean((1, 2)) for r, c in edge_rc])
    for (r, c), f in zip(edge_rc, fused):
        expected[:, 2 * r, 2 * c] = f  # the block's top-left pixel
    # salient points: the argmax of each cell of the 2x2 grid (rows 0-1 | 2-3, cols 0-2 | 3-5)
    cells = [[(r, c) for r in rows for c in cols] for rows in (range(0, 2), range(2, 4))
             for cols in (range(0, 3), range(3, 6))]
    salient_rc = [max(cell, key=lambda rc: certainty[rc].item()) for cell in cells]
    cell_max = torch.tensor([certainty[rc].item() for rc in salient_rc]).view(1, 1, 2, 2)
    gain = F.interpolate(cell_max, size=(h, w), mode='bilinear', align_corners=True)[0]
    amplified = high * (1 + gain)
    fused = flow([amplified[:, r, c] for r, c in salient_rc],
                 [low[:, 2 * r, 2 * c] for r, c in salient_rc])
    for (r, c), f in zip(salient_rc, fused):
        expected[:, 2 * r, 2 * c] = f  # written last: salient points win over boundary ones
    assert torch.allclose(out[0], expected, atol=1e-5)
    sampled = torch.zeros(2 * h, 2 * w, dtype=torch.bool)
    for r, c in edge_rc + salient_rc:
        sampled[2 * r, 2 * c] = True
    assert torch.equal(out[0][:, ~sampled], low[:, ~sampled])  # bit for bit, elsewhere
    assert (out[0][:, sampled] != low[:, sampled]).any(0).all()  # each sampled pixel changed
    assert 4 <= sampled.sum() <= 7  # 3 boundary + 4 salient points, some may coincide


def test_edge_target():
    y = torch.zeros(1, 12, 12, dtype=torch.long)
    y[:, :, 6:] = 1  # a vertical boundary between columns 5 and 6
    edges, valid = pfsegnet.edge_target(y, radius=2)
    assert valid.all()
    assert edges[0].sum(0).nonzero().flatten().tolist() == [4, 5, 6, 7]  # 2 px on each side
    y[:, :, 6] = 255  # an ignore column: only windows that reach valid 0s and 1s are edges
    edges, valid = pfsegnet.edge_target(y, radius=2)
    assert edges[0].sum(0).nonzero().flatten().tolist() == [5, 6, 7]
    assert not valid[0, :, 6].any()
    edges, _ = pfsegnet.edge_target(torch.full((1, 8, 8), 255), radius=2)
    assert not edges.any()  # all ignore: no edges


def test_rejects_sizes_not_multiple_of_32():
    with pytest.raises(ValueError, match='multiples of 32'):
        pfsegnet.PFSegNet(3, depth=18)(torch.randn(1, 3, 48, 64))


def test_parameter_count_resnet50():
    # The reference's DeepR50_PF_maxavg_deeply(16 classes, reduce_dim=64, max_pool_size=14,
    # avgpool_size=9, edge_points=128), built from lxtGH/PFSegNets e613a59 in torch 2.14.1 (with
    # stand-ins for its config.cfg and apex imports, pretrained=False), counts 32,994,003: a head
    # of 9,362,195, the same here, bit-identical in outputs when its weights are copied. Its
    # backbone of 23,631,808 has a deep stem (three 3x3 convs, 128 channels): 123,776 more than
    # torchvision's ResNet-50 without fc (23,508,032), which is used here.
    model = pfsegnet.PFSegNet(16, depth=50)
    assert sum(p.numel() for p in model.backbone.parameters()) == 23_508_032
    assert sum(p.numel() for p in model.parameters()) == 32_994_003 - 123_776  # 32,870,227
    conv2 = model.backbone.layer4[0].conv2  # the reference's variant 'D': dilated, still strided
    assert conv2.dilation == (4, 4) and conv2.stride == (2, 2)


def test_bf16_autocast_forward():
    torch.manual_seed(0)
    model = pfsegnet.PFSegNet(5, depth=18)
    x, y = torch.randn(2, 3, 32, 32), _labels(2, 32, 32)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        logits = model.eval()(x)
        _, loss = model.train()(x, y)
    assert logits.shape == (2, 5, 32, 32) and torch.isfinite(logits).all()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_load_pretrained_into_backbone(tmp_path):
    sd = {k: torch.randn(v.shape).to(v.dtype) for k, v in fpn.ResNet(18).state_dict().items()}
    torch.save({**sd, 'fc.weight': torch.zeros(1000, 512), 'fc.bias': torch.zeros(1000)},
               tmp_path / 'r18.pth')
    model = pfsegnet.PFSegNet(3, depth=18)
    model.load_pretrained(str(tmp_path / 'r18.pth'))  # strict, through fpn.load_backbone
    assert torch.equal(model.backbone.layer3[1].conv2.weight, sd['layer3.1.conv2.weight'])
    assert torch.equal(model.backbone.bn1.running_var, sd['bn1.running_var'])
    with pytest.raises(SystemExit, match='ResNet-50'):  # an 18 file into a 50: refused
        pfsegnet.PFSegNet(3, depth=50).load_pretrained(str(tmp_path / 'r18.pth'))
