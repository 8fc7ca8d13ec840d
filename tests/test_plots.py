"""plots.py: the one set of PIL helpers every figure of report.py and tables.py is drawn with
(the frame and its data -> pixel maps, series, legends), and the figures' sizes."""
from PIL import Image, ImageDraw

import plots

BLUE, ORANGE = plots.COLOURS[:2]


def blank(size=(200, 200)):
    image = Image.new('RGB', size, 'white')
    return image, ImageDraw.Draw(image)


def colours_in(image, box):
    return {colour for _, colour in image.crop(box).getcolors(1 << 16)}


def test_frame_maps_data_to_pixels_linear_and_log():
    image, draw = blank()
    to_x, to_y = plots.draw_frame(draw, (50, 20, 150, 120), (0, 10), (-1, 1))
    assert (to_x(0), to_x(5), to_x(10)) == (50, 100, 150)
    assert (to_y(-1), to_y(0), to_y(1)) == (120, 70, 20)  # y grows upwards
    to_x, _ = plots.draw_frame(draw, (50, 20, 150, 120), (1, 100), (0, 1), log_x=True)
    assert abs(to_x(10) - 100) < 1e-9  # 10 is half way from 1 to 100 on a log scale
    assert image.getpixel((50, 20)) == (0, 0, 0) and image.getpixel((100, 70)) == (255, 255, 255)


def test_frame_leaves_out_a_y_label_that_would_overlap():
    labels = {}
    for ticks in ([(0.0, '+0.0'), (0.05, '+0.1')], [(0.0, '+0.0'), (0.9, '+0.9')]):
        image, draw = blank()
        plots.draw_frame(draw, (60, 20, 150, 120), (0, 1), (0, 1), y_ticks=ticks)
        labels[ticks[1][1]] = colours_in(image, (0, 0, 55, 100)) != {(255, 255, 255)}
    assert labels == {'+0.1': False, '+0.9': True}  # 5 px from '+0.0': dropped; 90 px: drawn


def test_series_error_bars_dashes_and_the_pixels_it_returns():
    image, draw = blank()
    to_x, to_y = plots.draw_frame(draw, (20, 20, 180, 180), (0, 4), (0, 4))
    pixels = plots.draw_series(draw, to_x, to_y, [(1, 1, 0.5), (3, 3, 0.0)], BLUE, dashed=True)
    assert pixels == [(60, 140, 160, 120), (140, 60, 60, 60)]
    assert image.getpixel((60, 158)) == BLUE  # the error bar of the first point reaches y - 0.5
    assert image.getpixel((140, 68)) == (255, 255, 255)  # no bar where the error is 0
    on_line = [image.getpixel((x, 200 - x)) == BLUE for x in range(70, 130)]
    assert any(on_line) and not all(on_line)  # dashed: gaps along the line between the dots
    image, draw = blank()
    plots.draw_series(draw, to_x, to_y, [(1, 1, 0.0), (3, 3, 0.0)], BLUE)
    assert all(image.getpixel((x, 200 - x)) == BLUE for x in range(70, 130))  # solid


def test_legend_goes_to_the_corner_the_data_leaves_free():
    for avoid, free_corner in (([(170, 30)], (25, 25, 100, 50)),  # data top right: top left
                               ([], (100, 25, 175, 50))):  # nothing in the way: top right
        image, draw = blank()
        plots.draw_legend(draw, (20, 20, 180, 180), [('ddim', BLUE), ('dpm++', ORANGE)], avoid)
        assert colours_in(image, free_corner) != {(255, 255, 255)}


def test_figures_are_written_at_their_sizes(tmp_path):
    series = [('gen', 'final', [(0, 50, 1), (1, 53, 2)]), ('gen', 'selected', [(0, 51, 1)])]
    assert plots.plot_miou_vs_r(series, 'R0', str(tmp_path / 'r.png'))
    assert not plots.plot_miou_vs_r([], 'R0', str(tmp_path / 'none.png'))
    assert not (tmp_path / 'none.png').exists()
    rep = dict(baseline='R0', foreground=['a', 'b'], image_share={'a': 0.2, 'b': 0.9},
               gains={'R1': dict(gain={'a': 0.05, 'b': -0.01, 'bg': 0.3}, pearson_r=-1.0)})
    plots.plot_gains(rep, str(tmp_path / 'g.png'), subtitle='r over 2 classes')
    rows = [('ddim', 10, dict(class_freq_tvd=0.1, consistency_miou=0.4, fid=90.0))]
    plots.plot_steps(rows, {('ddim', 10): (0.45, 0.01)}, str(tmp_path / 's.png'))
    for name, size in (('r.png', (640, 420)), ('g.png', (640, 420)), ('s.png', (1000, 620))):
        with Image.open(tmp_path / name) as im:
            assert im.size == size and BLUE in colours_in(im.convert('RGB'), (0, 0) + size)
