"""Interactive views of a map with its model and graphs: a self-contained NGL page for the
browser (:mod:`~neural_em.view.page`) and a ChimeraX command file
(:mod:`~neural_em.view.chimerax`), both written from one :class:`~neural_em.view.scene.Scene`."""
