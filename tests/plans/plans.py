"""Plans and configs the tracking-plan tests share."""

from __future__ import annotations

from pathlib import Path

SHOP_PLAN = """\
name: shop
version: 3
controls:
  unplanned_events: {events}
  unplanned_properties: {properties}
  violations: {violations}
events:
  Order Completed:
    description: A customer paid.
    properties:
      type: object
      required: [order_id, revenue]
      properties:
        order_id: {{type: string}}
        revenue: {{type: number, minimum: 0}}
        currency: {{type: string, enum: [USD, EUR, GBP]}}
        products:
          type: array
          items:
            type: object
            properties:
              sku: {{type: string}}
              price: {{type: number}}
  Signed Up:
    properties: {{type: object}}
identify:
  traits:
    type: object
    properties:
      email: {{type: string, format: email}}
      plan: {{type: string}}
"""


def write_plans(root: Path) -> None:
    """`root/plans`: `web` flags every violation, `app` blocks every one, `lean` omits them."""
    (root / "plans").mkdir()
    (root / "plans" / "web.yaml").write_text(shop_plan())
    (root / "plans" / "app.yaml").write_text(shop_plan("block", "block", "block"))
    (root / "plans" / "lean.yaml").write_text(shop_plan("flag", "omit", "omit"))


def shop_plan(events: str = "flag", properties: str = "flag", violations: str = "flag") -> str:
    return SHOP_PLAN.format(events=events, properties=properties, violations=violations)


CONFIG = """
[server]
admin_token = "test-admin-token"

[warehouse]
poll_interval = 0.05

[[sources]]
name = "web"
write_keys = ["wk_web"]
tracking_plan = "plans/web.yaml"

[[sources]]
name = "app"
write_keys = ["wk_app"]
tracking_plan = "plans/app.yaml"

[[sources]]
name = "lean"
write_keys = ["wk_lean"]
tracking_plan = "plans/lean.yaml"

[[sources]]
name = "free"
write_keys = ["wk_free"]
"""
