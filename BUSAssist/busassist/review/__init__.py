"""BUSAssist Review, the desktop reviewer's Qt-free parts: worklist, analysis session, mask editor, verdicts.

``busassist-review`` (``busassist.apps.review``) draws them with PySide6 and drives them through the
same presenter as the Slicer panel (``busassist.presenter``); everything here runs, and is tested,
without Qt.
"""
