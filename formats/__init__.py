"""File formats every stage reads: the item-table export."""
