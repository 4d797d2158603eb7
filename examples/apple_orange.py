"""The book's shopping graph (chapter 5): 2 apples at 100 and 3 oranges at 150, tax 1.1.

Forward through mul/add nodes, backward from d(price) = 1, each node a pure function pair.
Prints the graph with the forward value and [gradient] on every edge.

    python examples/apple_orange.py
"""

from __future__ import annotations

import funcnet as fn
from funcnet.cli import run_script


def shop(apple=100.0, apple_num=2.0, orange=150.0, orange_num=3.0, tax=1.1):
    """Forward and backward through the graph; returns the values and the gradients."""
    apple_price, c1 = fn.mul.forward(apple, apple_num)
    orange_price, c2 = fn.mul.forward(orange, orange_num)
    total, c3 = fn.add.forward(apple_price, orange_price)
    price, c4 = fn.mul.forward(total, tax)

    dtotal, dtax = fn.mul.backward(c4, 1.0)
    dapple_price, dorange_price = fn.add.backward(c3, dtotal)
    dapple, dapple_num = fn.mul.backward(c1, dapple_price)
    dorange, dorange_num = fn.mul.backward(c2, dorange_price)
    values = dict(
        apple=apple, apple_num=apple_num, orange=orange, orange_num=orange_num, tax=tax,
        apple_price=apple_price, orange_price=orange_price, total=total, price=price,
    )  # fmt: skip
    grads = dict(
        apple=dapple, apple_num=dapple_num, orange=dorange, orange_num=dorange_num, tax=dtax,
        apple_price=dapple_price, orange_price=dorange_price, total=dtotal, price=1.0,
    )  # fmt: skip
    return values, grads


def draw(v: dict, g: dict) -> str:
    """The graph as text: every edge is labelled ``value [gradient]``."""
    grid = [[" "] * 100 for _ in range(8)]

    def put(row, col, text):
        grid[row][col : col + len(text)] = text

    def edge(row, col, key, end, corner):  # label at col, a line to column ``end``
        text = f"{v[key]:g} [{g[key]:g}] "
        put(row, col, text + "─" * (end - col - len(text)) + corner)

    a, b, c = 31, 52, 73  # columns of the first mul nodes, the add node, the last mul node
    for row, name in [(0, "apple"), (2, "apple_num"), (4, "orange"), (6, "orange_num")]:
        put(row, 0, name)
        edge(row, 11, name, a, "┐" if row in (0, 4) else "┘")
    put(1, a - 1, "(×)")
    edge(1, a + 3, "apple_price", b, "┐")
    put(2, b, "│")
    put(3, b - 1, "(+)")
    edge(3, b + 3, "total", c, "┐")
    put(4, b, "│")
    put(4, c, "│")
    put(5, a - 1, "(×)")
    edge(5, a + 3, "orange_price", b, "┘")
    put(5, c - 1, "(×)")
    put(5, c + 3, f"{v['price']:g} [{g['price']:g}] ──▶ price")
    put(6, c, "│")
    put(7, 0, "tax")
    edge(7, 11, "tax", c, "┘")
    return "\n".join("".join(row).rstrip() for row in grid)


def main() -> dict:
    v, g = shop()
    print(draw(v, g))
    print()
    print(f"price {v['price']:g}")
    for k, label in [
        ("apple", "dApple"),
        ("apple_num", "dApple_num"),
        ("orange", "dOrange"),
        ("orange_num", "dOrange_num"),
        ("tax", "dTax"),
    ]:
        print(f"{label} {g[k]:g}")
    # The same gradients by central differences, as a check on the hand-written backward.
    names = ["apple", "apple_num", "orange", "orange_num", "tax"]
    num = fn.numerical_gradient(lambda p: shop(*p)[0]["price"], [v[k] for k in names])
    worst = max(abs(float(n) - g[k]) for n, k in zip(num, names, strict=True))
    print(f"max |backward − numerical| = {worst:.1e}")
    return {"values": v, "grads": g}


if __name__ == "__main__":
    run_script(main)
