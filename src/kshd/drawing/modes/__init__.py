"""Drawing modes, one file each: text to image, image to image, inpaint, sketch to style
(`base`: what a mode holds and does; `registry`: which mode a request is). A new mode is one
file, a `Mode` subclass decorated with `registry.register_mode`, drawn by the engine unchanged."""
