"""Toy problems of Elich et al. ("Examining Common Paradigms in Multi-Task Learning", arXiv
2311.04698): the CAGrad toy of Liu et al. (Sec. 4.1.1, Table A3, Fig. 1) and the loss-scale
toy (App. A2, Fig. A1/A2), run with smto's own methods and optimizers."""
