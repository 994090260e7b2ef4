"""Slip and poster rendering (Pillow, qrcode, Noto Indic fonts) and ESC/POS encoding and transport.

Modules: fonts (shaped text), slip (token slips), poster (counter QR posters), qr, escpos_encode,
raster (decoder for tests and previews), transport (printer URIs). Nothing here imports FastAPI.
"""
