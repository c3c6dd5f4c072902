"""Demo articles loaded into an empty knowledge base (kept in Python so they ship with the package)."""

DEMO_ARTICLES: dict[str, str] = {
    "returns-and-refunds": """---
title: Returns and refunds
tags: returns, refunds, money back
---
You can return any item within **30 days** of delivery, unused and in its
original packaging. Start a return from *My orders* or ask support for a
prepaid label.

Refunds go back to the original payment method within **5 business days** of
the item reaching our warehouse. Shipping costs are refunded when the item was
faulty or we sent the wrong one.
""",
    "shipping-times": """---
title: Shipping times and tracking
tags: shipping, delivery, tracking
---
Orders placed before 14:00 (CET) on a business day leave our warehouse the same
day. Standard delivery takes 2–4 business days within the EU and 5–8 days
elsewhere; express delivery takes 1–2 business days.

Every shipped order has a tracking number, shown in *My orders* and in the
shipping confirmation email.
""",
    "warranty": """---
title: Warranty and repairs
tags: warranty, repair, faulty
---
All appliances carry a **two-year warranty** covering manufacturing defects.
For a faulty item, open a support ticket with the order number and a short
description or photo of the fault; we arrange a repair or replacement.
Wear parts such as burrs, seals and blades are covered for six months.
""",
    "change-or-cancel-order": """---
title: Changing or cancelling an order
tags: orders, cancel, change address
---
An order can be changed or cancelled free of charge while its status is
*processing*. Once it has shipped, refuse the delivery or start a return
instead. Delivery address changes after shipping must be requested from the
carrier with the tracking number.
""",
}
