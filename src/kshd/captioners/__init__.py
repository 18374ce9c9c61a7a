"""Captioners behind `caption.kind`: a batch of images in, one text per image out, and an
identity that keys the caption cache.

A captioner is one file here: a `kshd.captioners.base.Captioner` subclass registered with
`@register_captioner(<its settings class>)`, its settings a subclass of
`kshd.config.schema_caption.CaptionSettings` registered under its kind, its defaults in
`conf/caption/<kind>.yaml`, and its module imported by `kshd.captioners.registry`.
"""
