"""Lite-LLM4Rec: Item LLM -> Recommendation LLM -> item projection head."""
