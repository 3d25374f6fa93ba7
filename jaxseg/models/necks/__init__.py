"""Necks: modules between the backbone and the heads that rewrite the feature dict."""
