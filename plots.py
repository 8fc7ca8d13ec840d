"""The figures of report.py and tables.py, drawn with PIL (the runtime dependencies are torch,
numpy, pillow and scipy: no matplotlib). One set of helpers draws every panel: draw_frame (the
frame, titles, tick labels and the data -> pixel maps), draw_series (lines, error bars, dots),
draw_legend; draw_log_x_panel puts the three together for a panel of lines against a log x (the
steps and compute figures).

    plots.plot_gains(rep, 'gain_vs_frequency.png', subtitle='r over ...')  # report.py's rep
    plots.plot_miou_vs_r(report.r_series(rep), 'R0', 'miou_vs_r.png')
    plots.plot_steps(rows, downstream, 'steps.png')  # tables.read_steps(folder)
    plots.plot_compute(points, 'compute.png')  # tables.read_compute(folder)

Every figure is written through pairs.save_png (a temporary name, then renamed).
"""
import math

from PIL import Image, ImageDraw

import pairs

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194)]  # matplotlib's first seven 'tab10' colours


def colour_of(i):
    return COLOURS[i % len(COLOURS)]


def is_number(value):
    """Not None (a JSON NaN) and not NaN: a value a series can draw."""
    return value is not None and not math.isnan(value)


def draw_frame(draw, box, x_range, y_range, *, log_x=False, title=(), x_label='', x_ticks=(),
               y_ticks=()):
    """The scaffolding of one plot panel: the frame `box` (left, top, right, bottom, pixels),
    the title lines above it, the tick labels [(value, text)] below it (x, centred) and left of
    it (y, right-aligned; a y label within 14 px of one already drawn is left out, so list the
    one that matters first) and x_label under the x ticks. Returns (to_x, to_y): data -> pixels,
    x on a log scale if log_x."""
    left, top, right, bottom = box
    x_low, x_high = x_range
    y_low, y_high = y_range
    if log_x:
        x_low = math.log(x_low)
        x_high = math.log(x_high)

    def to_x(x):
        if log_x:
            x = math.log(x)
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    def to_y(y):
        return bottom - (y - y_low) / (y_high - y_low) * (bottom - top)

    draw.rectangle(box, outline='black')
    for i, line in enumerate(reversed(title)):  # the last line just above the frame
        draw.text((left, top - 16 - 14 * i), line, fill='black')
    drawn_at = []  # the y pixel of each y label drawn so far
    for value, text in y_ticks:
        y = to_y(value)
        if any(abs(y - other) <= 14 for other in drawn_at):
            continue
        drawn_at.append(y)
        draw.text((left - 6 - draw.textlength(text), y - 6), text, fill='black')
    for value, text in x_ticks:
        draw.text((to_x(value) - draw.textlength(text) / 2, bottom + 4), text, fill='black')
    if x_label:
        draw.text((left, bottom + 20), x_label, fill='black')
    return to_x, to_y


def draw_dashed(draw, start, end, colour, width=2, period=10):
    """A dashed line from start to end: a dash over the first 60% of every `period` pixels."""
    xa, ya = start
    xb, yb = end
    n_dashes = max(1, int(math.hypot(xb - xa, yb - ya) / period))
    for i in range(n_dashes):
        f_start = i / n_dashes
        f_end = (i + 0.6) / n_dashes
        draw.line([xa + f_start * (xb - xa), ya + f_start * (yb - ya),
                   xa + f_end * (xb - xa), ya + f_end * (yb - ya)], fill=colour, width=width)


def draw_series(draw, to_x, to_y, points, colour, *, connect=True, dashed=False, filled=True,
                dx=0):
    """One series of points [(x, y, error)], in x order: lines between neighbours (connect;
    dashed or solid), an error bar with caps where error > 0, a dot (filled or open), all moved
    dx pixels sideways (so the error bars of series at the same x do not hide each other).
    Returns the pixels drawn, [(x, y, y of the bar's low end, y of its high end)]."""
    pixels = []  # (x, y, y of the bar's low end, y of its high end)
    for x, y, error in points:
        pixels.append((to_x(x) + dx, to_y(y), to_y(y - error), to_y(y + error)))
    if connect:
        for (xa, ya, _, _), (xb, yb, _, _) in zip(pixels, pixels[1:]):
            if dashed:
                draw_dashed(draw, (xa, ya), (xb, yb), colour)
            else:
                draw.line([xa, ya, xb, yb], fill=colour, width=2)
    for x, y, y_low, y_high in pixels:
        if y_low != y_high:
            draw.line([x, y_low, x, y_high], fill=colour)
            draw.line([x - 3, y_low, x + 3, y_low], fill=colour)
            draw.line([x - 3, y_high, x + 3, y_high], fill=colour)
        inside = colour if filled else 'white'
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=colour, fill=inside)
    return pixels


def draw_legend(draw, box, entries, avoid=()):
    """Legend lines [(text, colour)] inside the frame `box`, in the corner that covers the fewest
    of the pixels `avoid` [(x, y)], the data drawn (ties: top right, top left, bottom right,
    bottom left)."""
    left, top, right, bottom = box
    width = max(draw.textlength(text) for text, _ in entries)
    height = 14 * len(entries)
    corners = [(right - 6 - width, top + 6), (left + 6, top + 6),
               (right - 6 - width, bottom - 6 - height), (left + 6, bottom - 6 - height)]

    def n_covered(corner):
        x0, y0 = corner
        return sum(x0 - 6 <= x <= x0 + width + 6 and y0 - 6 <= y <= y0 + height + 6
                   for x, y in avoid)

    x0, y0 = min(corners, key=n_covered)  # the first of the corners that cover the fewest
    for i, (text, colour) in enumerate(entries):
        draw.text((x0, y0 + 14 * i), text, fill=colour)


def drawn_points(pixels):
    """The (x, y) of the dots and error-bar ends of draw_series's pixels, for draw_legend."""
    points = []
    for x, y, y_low, y_high in pixels:
        points += [(x, y), (x, y_low), (x, y_high)]
    return points


def plot_gains(rep, path, subtitle='', size=(640, 420), margin=60):
    """Scatter of per-class IoU gain (y) against image share (x, linear, as Fig. 7), one colour per
    label of report.py's rep, the classes r is over only; the legend gives each label's r."""
    image = Image.new('RGB', size, 'white')
    draw = ImageDraw.Draw(image)
    points = []  # (image share, gain in points, label, class)
    for label, gain in rep['gains'].items():
        for c, class_gain in gain['gain'].items():
            share = rep['image_share'].get(c, float('nan'))
            if c in rep['foreground'] and not math.isnan(class_gain) and not math.isnan(share):
                points.append((share, 100 * class_gain, label, c))
    if not points:
        draw.text((margin, margin), 'no gains to plot (baseline missing?)', fill='black')
        pairs.save_png(image, path)
        return
    shares = [share for share, _, _, _ in points]
    gains = [gain for _, gain, _, _ in points] + [0.0]  # zero gain always in view
    x_low = max(0.0, min(shares) - 0.05)
    x_high = min(1.0, max(shares) + 0.05)
    if x_high <= x_low:  # every share 0, or every share 1
        x_low = x_low - 0.05
        x_high = x_high + 0.05
    y_low = min(gains) - 0.5
    y_high = max(gains) + 0.5
    box = (margin, margin, size[0] - margin, size[1] - margin)
    to_x, to_y = draw_frame(
        draw, box, (x_low, x_high), (y_low, y_high),
        title=[f"IoU gain (points) over {rep['baseline']} per class", subtitle],
        x_label='share of real training patches containing the class',
        x_ticks=[(x, f'{100 * x:.3g}%') for x in (x_low, x_high)],
        y_ticks=[(y, f'{y:+.1f}') for y in (0.0, y_low, y_high)])
    draw.line([box[0], to_y(0), box[2], to_y(0)], fill=(160, 160, 160))  # zero gain
    labels = list(rep['gains'])
    drawn = []
    for share, gain, label, c in points:
        colour = colour_of(labels.index(label))
        drawn += draw_series(draw, to_x, to_y, [(share, gain, 0.0)], colour, connect=False)
        if label == labels[-1]:  # the class names once, beside the last label's dots
            draw.text((to_x(share) + 6, to_y(gain) - 6), c, fill=colour)
    legend = []
    for i, label in enumerate(labels):
        r = rep['gains'][label]['pearson_r']
        r_text = 'n/a' if math.isnan(r) else f'{r:+.2f}'
        legend.append((f'o {label}  r = {r_text}', colour_of(i)))
    draw_legend(draw, box, legend, avoid=drawn_points(drawn))
    pairs.save_png(image, path)


def plot_miou_vs_r(series, baseline, path, size=(640, 420), margin=60):
    """mIoU (mean +- SE error bars) against R, one colour per arm, from report.r_series: solid
    lines and filled dots: final evaluation, dashed lines and open dots: selected checkpoint.
    False if there is nothing to plot."""
    if not series:
        return False
    image = Image.new('RGB', size, 'white')
    draw = ImageDraw.Draw(image)
    every_R = [R for _, _, points in series for R, _, _ in points]
    bar_ends = [end for _, _, points in series for _, mean, se in points
                for end in (mean - se, mean + se)]
    R_max = max(every_R) or 1.0  # (R = 0 points only: any scale will do)
    y_low = min(bar_ends) - 0.5
    y_high = max(bar_ends) + 0.5
    y_middle = (y_low + y_high) / 2
    box = (margin, margin, size[0] - margin, size[1] - margin)
    to_x, to_y = draw_frame(
        draw, box, (-0.08 * R_max, 1.08 * R_max), (y_low, y_high),
        title=[f'val mIoU (%), mean +- SE over seeds; R = 0: {baseline}',
               'solid: final evaluation, dashed: selected checkpoint'],
        x_label='R (synthetic pairs per real one)',
        x_ticks=[(R, f'{R:g}') for R in sorted(set(every_R))],
        y_ticks=[(y, f'{y:.1f}') for y in (y_low, y_middle, y_high)])
    arms = list(dict.fromkeys(arm for arm, _, _ in series))
    legend = []
    drawn = []
    for i, (arm, kind, points) in enumerate(series):
        colour = colour_of(arms.index(arm))
        final = kind == 'final'
        offset = 4 * (i - (len(series) - 1) / 2)
        drawn += draw_series(draw, to_x, to_y, points, colour, dashed=not final, filled=final,
                             dx=offset)
        legend.append((f'{arm} ({kind})', colour))
    draw_legend(draw, box, legend, avoid=drawn_points(drawn))
    pairs.save_png(image, path)
    return True


def draw_log_x_panel(draw, box, title, x_range, x_ticks, lines):
    """One panel of lines against a log-scale x: the frame `box` with its title and ticks, the y
    range that holds every point and error bar (+ 5%), each line and a legend of every line's
    name (an empty line too). lines: [(name, colour, [(x, y, error)])]. A panel with no points
    says so instead."""
    every_point = [point for _, _, points in lines for point in points]
    if not every_point:
        draw.text((box[0], box[1]), f'{title}: nothing to plot', fill='black')
        return
    low = min(value - error for _, value, error in every_point)
    high = max(value + error for _, value, error in every_point)
    pad = 0.05 * (high - low + 1e-9)  # (+ 1e-9: a panel of one value still has a height)
    low = low - pad
    high = high + pad
    to_x, to_y = draw_frame(
        draw, box, x_range, (low, high), log_x=True, title=[title], x_ticks=x_ticks,
        y_ticks=[(y, f'{y:.3g}') for y in (low, (low + high) / 2, high)])
    drawn = []
    for _, colour, points in lines:
        drawn += draw_series(draw, to_x, to_y, sorted(points), colour)
    draw_legend(draw, box, [(name, colour) for name, colour, _ in lines],
                avoid=drawn_points(drawn))


def panel_box(p, panel, margin, n_cols=2):
    """The frame of panel p (row by row, n_cols to a row) of a figure of panel-sized cells."""
    width, height = panel
    left = (p % n_cols) * width + margin
    top = (p // n_cols) * height + margin
    return (left, top, left + width - 2 * margin, top + height - 2 * margin)


def plot_steps(rows, downstream, path, panel=(500, 310), margin=50):
    """steps.png, 2 x 2 panels: class TVD, consistency mIoU, FID and the downstream val mIoU at
    R = 3 (mean +- SE), each against the sampling steps (log scale), one line per sampler.
    rows and downstream as tables.read_steps returns them."""
    samplers = {'ddim': COLOURS[0], 'dpm++': COLOURS[1], 'ddpm': COLOURS[2]}
    panels = []  # (title, [(sampler, steps, value, error)])
    for title, key, scale in (('class TVD', 'class_freq_tvd', 1),
                              ('consistency mIoU %', 'consistency_miou', 100),
                              ('FID (segmenter features)', 'fid', 1)):
        panels.append((title, [(s, k, scale * m[key], 0.0) for s, k, m in rows]))
    downstream_points = []
    for sampler, steps, _ in rows:
        miou = downstream.get((sampler, steps))  # (mean, SE), None where not run
        if miou is not None and is_number(miou[0]):
            downstream_points.append((sampler, steps, 100 * miou[0], 100 * miou[1]))
    panels.append(('downstream val mIoU % (R = 3)', downstream_points))
    every_steps = sorted({steps for _, steps, _ in rows})  # the x ticks, and the x range:
    steps_range = (0.8 * min(every_steps), 1.25 * max(every_steps))  # 5 ... 1000: 4 ... 1250
    width, height = panel
    image = Image.new('RGB', (2 * width, 2 * height), 'white')
    draw = ImageDraw.Draw(image)
    for p, (title, points) in enumerate(panels):
        lines = []
        for sampler, colour in samplers.items():
            line = [(k, value, error) for s, k, value, error in points if s == sampler]
            lines.append((sampler, colour, line))
        draw_log_x_panel(draw, panel_box(p, panel, margin), title, steps_range,
                         [(steps, str(steps)) for steps in every_steps], lines)
    draw.text((margin, 2 * height - 20),
              'x: sampling steps (network evaluations per pair), log scale', fill='black')
    pairs.save_png(image, path)


def plot_compute(points, path, panel=(500, 310), margin=50):
    """compute.png, 2 panels side by side: the captured fraction of the oracle's gain at R = 3
    (final evaluation and selected checkpoint, one line each) and the consistency mIoU of G's
    pairs, each against G's training iterations (log scale). points as tables.read_compute
    returns them; a missing value is left out of its line. The fractions have error bars of
    +- their SE (report.py; none from a report.json older than the SE); the consistency has no SE
    in metrics.json, so none."""
    captured = {'final': [], 'selected': []}  # [(iterations, fraction, SE)]
    consistency = []  # [(iterations, consistency mIoU %, 0.0)]
    for point in points:
        for kind, line in captured.items():
            entry = point['captured'][kind] if point['captured'] else None
            if entry and is_number(entry['fraction']):
                se = entry.get('se')
                line.append((point['iters'], entry['fraction'], se if is_number(se) else 0.0))
        metrics = point['metrics'] or {}
        if is_number(metrics.get('consistency_miou')):
            consistency.append((point['iters'], 100 * metrics['consistency_miou'], 0.0))
    every_iters = [point['iters'] for point in points]  # the x ticks, and the x range
    iters_range = (0.8 * min(every_iters), 1.25 * max(every_iters))
    iters_ticks = [(k, str(k)) for k in every_iters]
    width, height = panel
    image = Image.new('RGB', (2 * width, height), 'white')
    draw = ImageDraw.Draw(image)
    draw_log_x_panel(draw, panel_box(0, panel, margin),
                     'captured fraction of the oracle gain (R = 3)', iters_range, iters_ticks,
                     [('final', COLOURS[0], captured['final']),
                      ('selected', COLOURS[1], captured['selected'])])
    draw_log_x_panel(draw, panel_box(1, panel, margin), "consistency mIoU % of G's pairs",
                     iters_range, iters_ticks, [('consistency', COLOURS[0], consistency)])
    draw.text((margin, height - 20), 'x: generator training iterations, log scale',
              fill='black')
    pairs.save_png(image, path)
