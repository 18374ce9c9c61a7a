"""The demo world and the tests' models: procedural drawings in two styles, tiny and world models
built here, the bundled samples, the demo. The product (kshd) never imports it.
"""
