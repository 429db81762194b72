"""
Pictures of ARC tasks in ARC's standard 10-colour palette: a PNG (Pillow) and ANSI-coloured terminal text.

    nanoseal arc show 007bbfb7 --png task.png     # prints the task, writes the picture (show_main)

The PNG has one row per demonstration (input -> output), then one row per test pair with the test input,
the expected output (when known) and the predicted output(s) (when given).
"""

import io
import sys
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from nanoseal.arc.data import Grid, Task, find_task
from nanoseal.common import atomic_write_bytes

# ARC's palette: 0 black, 1 blue, 2 red, 3 green, 4 yellow, 5 grey, 6 magenta, 7 orange, 8 sky, 9 maroon
PALETTE = [
    (0, 0, 0), (0, 116, 217), (255, 65, 54), (46, 204, 64), (255, 220, 0),
    (170, 170, 170), (240, 18, 190), (255, 133, 27), (127, 219, 255), (135, 12, 37),
]
BACKGROUND = (255, 255, 255)
LINE = (85, 85, 85)
TEXT = (0, 0, 0)
MISSING = (230, 230, 230)


def grid_image(grid: Grid, cell: int = 16) -> Image.Image:
    """One grid as an image: cell x cell squares separated by 1-pixel grey lines."""
    h, w = len(grid), len(grid[0])
    img = Image.new("RGB", (w * cell + 1, h * cell + 1), LINE)
    draw = ImageDraw.Draw(img)
    for r, row in enumerate(grid):
        for c, colour in enumerate(row):
            x, y = c * cell + 1, r * cell + 1
            draw.rectangle([x, y, x + cell - 2, y + cell - 2], fill=PALETTE[colour])
    return img


def task_image(task: Task, predictions: Sequence[Sequence[Grid | None]] | None = None) -> Image.Image:
    """The whole task as one picture; predictions[i] lists predicted grids for test pair i."""
    cell = max(4, min(16, 200 // task.max_side()))
    font = ImageFont.load_default()
    label_h, pad = 14, 10
    rows: list[list[tuple[str, Image.Image | None]]] = []
    for k, (inp, out) in enumerate(task.train):
        rows.append([(f"demo {k} input", grid_image(inp, cell)), (f"demo {k} output", grid_image(out, cell))])
    for k, (inp, out) in enumerate(task.test):
        row = [(f"test {k} input", grid_image(inp, cell))]
        row.append((f"test {k} expected", None if out is None else grid_image(out, cell)))
        for a, pred in enumerate((predictions[k] if predictions and k < len(predictions) else []) or []):
            row.append((f"attempt {a + 1}", None if pred is None else grid_image(pred, cell)))
        rows.append(row)
    slot_w = max(90, max(img.width for row in rows for _, img in row if img is not None)) + pad  # room for labels
    heights = [max((img.height if img else 20) for _, img in row) + label_h + pad for row in rows]
    width = pad + slot_w * max(len(row) for row in rows)
    canvas = Image.new("RGB", (width, pad + sum(heights)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = pad
    for row, height in zip(rows, heights):
        for j, (label, img) in enumerate(row):
            x = pad + j * slot_w
            draw.text((x, y), label, fill=TEXT, font=font)
            if img is None:
                draw.rectangle([x, y + label_h, x + 40, y + label_h + 20], fill=MISSING)
                draw.text((x + 4, y + label_h + 4), "none", fill=TEXT, font=font)
            else:
                canvas.paste(img, (x, y + label_h))
        y += height
    return canvas


def save_task_png(task: Task, path: str, predictions: Sequence[Sequence[Grid | None]] | None = None) -> None:
    """Write the task's picture as a PNG (atomically)."""
    buf = io.BytesIO()
    task_image(task, predictions).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def ansi_grid(grid: Grid) -> list[str]:
    """The grid as terminal lines: two coloured spaces per cell (24-bit ANSI background colours)."""
    def cell(c: int) -> str:
        r, g, b = PALETTE[c]
        return f"\x1b[48;2;{r};{g};{b}m  "
    return ["".join(cell(c) for c in row) + "\x1b[0m" for row in grid]


def _side_by_side(left: Grid, right: Grid | None, gap: str = "  ->  ") -> list[str]:
    a, b = ansi_grid(left), ansi_grid(right) if right is not None else ["?"]
    blank_a = " " * (2 * len(left[0]))
    lines = []
    for i in range(max(len(a), len(b))):
        la = a[i] if i < len(a) else blank_a
        lb = b[i] if i < len(b) else ""
        lines.append(la + (gap if i == 0 else " " * len(gap)) + lb)
    return lines


def task_ansi(task: Task) -> str:
    """The task as ANSI-coloured text: each pair as input -> output."""
    lines = [f"task {task.id}: {len(task.train)} demonstration(s), {len(task.test)} test pair(s)"]
    for label, pairs in (("demo", task.train), ("test", task.test)):
        for k, (inp, out) in enumerate(pairs):
            shape = f"{len(inp)}x{len(inp[0])} -> " + ("?" if out is None else f"{len(out)}x{len(out[0])}")
            lines.append(f"{label} {k} ({shape})")
            lines.extend(_side_by_side(inp, out))
            lines.append("")
    return "\n".join(lines)


def show_main(task_id: str, png: str | None = None, dataset: str | None = None, split: str | None = None) -> int:
    """`nanoseal arc show TASK_ID [--png FILE]`: print the task in colour and optionally write its PNG."""
    task = find_task(task_id, dataset, split)
    print(task_ansi(task))
    if png:
        save_task_png(task, png)
        print(f"wrote {png}", file=sys.stderr)
    return 0
