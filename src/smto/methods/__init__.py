"""All methods, one module each, and their registry lines."""

from smto.methods.aligned_mtl import AlignedMTL
from smto.methods.auto_lambda import AutoLambda
from smto.methods.bayesagg_mtl import BayesAggMTL
from smto.methods.cagrad import CAGrad
from smto.methods.cdtt import CDTT
from smto.methods.config import ConFIG
from smto.methods.cr_mogm import CRMOGM
from smto.methods.db_mtl import DBMTL
from smto.methods.dtp import DTP
from smto.methods.dualproj import DualProj
from smto.methods.dwa import DWA
from smto.methods.edm import EDM
from smto.methods.excess_mtl import ExcessMTL
from smto.methods.fairgrad import FairGrad
from smto.methods.famo import FAMO
from smto.methods.fixed import FixedWeights
from smto.methods.gls import GLS
from smto.methods.go4align import GO4Align
from smto.methods.graddrop import GradDrop
from smto.methods.gradnorm import GradNorm
from smto.methods.gradvac import GradVac
from smto.methods.imtl import IMTL, IMTLG, IMTLL
from smto.methods.krum import Krum
from smto.methods.mgda import MGDA
from smto.methods.moco import MoCo
from smto.methods.modo import MoDo
from smto.methods.nash_mtl import NashMTL
from smto.methods.pcd import PCD
from smto.methods.pcgrad import PCGrad
from smto.methods.rlw import RLW
from smto.methods.rotograd import RotoGrad
from smto.methods.sdmgrad import SDMGrad
from smto.methods.si import SI
from smto.methods.stch import STCH
from smto.methods.trimmed_mean import TrimmedMean
from smto.methods.unit_scal import UnitScal
from smto.methods.upgrad import UPGrad
from smto.methods.uw import UW
from smto.methods.uw_o import UWO
from smto.registry import register

register("unit_scal", UnitScal, aliases=("uniform", "ew", "equal_weighting"))
register("fixed", FixedWeights, aliases=("fixed_weights", "fw"))
register("si", SI, aliases=("scale_invariant",))
register("uw", UW, aliases=("uncertainty", "uncertainty_weighting"))
register("uw_o", UWO, aliases=("optimal_uw", "analytical_uw"))
register("rlw_normal", RLW, distribution="normal", display_name="RLW-Normal", aliases=("rlw",))
register("rlw_dirichlet", RLW, distribution="dirichlet", display_name="RLW-Dirichlet")
register("dwa", DWA, aliases=("dynamic_weight_average",))
register("famo", FAMO)
register("mgda", MGDA)
register("mgda_ub", MGDA, display_name="MGDA-UB", space="features")
register("pcgrad", PCGrad)
register("graddrop", GradDrop)
register("cagrad", CAGrad)
register("nash_mtl", NashMTL, aliases=("nash",))
register("imtl", IMTL, aliases=("imtl_hybrid",))
register("imtl_l", IMTLL)
register("imtl_g", IMTLG)
register("edm", EDM)
register("cdtt", CDTT, aliases=("task_tensioner",))
register("aligned_mtl", AlignedMTL)
register("rotograd", RotoGrad)
register("auto_lambda", AutoLambda, aliases=("autol",))
register("gls", GLS, aliases=("geometric_loss",))
register("db_mtl", DBMTL, aliases=("dual_balancing",))
register("si_mtl", DBMTL, beta=0.0, display_name="SI-MTL", aliases=("scale_invariant_mtl",))
register("stch", STCH, aliases=("smooth_tchebycheff",))
register("upgrad", UPGrad)
register("dualproj", DualProj, aliases=("dual_proj",))
register("fairgrad", FairGrad)
register("krum", Krum, aliases=("multi_krum",))
register("trimmed_mean", TrimmedMean)
register("gradvac", GradVac, aliases=("gradient_vaccine",))
register("gradnorm", GradNorm, aliases=("gradient_normalization",))
register("config", ConFIG, aliases=("conflict_free",))
register("excess_mtl", ExcessMTL, aliases=("excess_risk",))
register("sdmgrad", SDMGrad, aliases=("sdm_grad",))
register("modo", MoDo, aliases=("double_sampling",))
register("cr_mogm", CRMOGM, aliases=("crmogm",))
register("moco", MoCo)
register("go4align", GO4Align, aliases=("group_optimization",))
register("dtp", DTP, aliases=("dynamic_task_prioritization",))
register("bayesagg_mtl", BayesAggMTL, aliases=("bayesagg",))
register("pcd", PCD, aliases=("priority_constrained_descent",))


__all__ = [
    "CDTT",
    "CRMOGM",
    "DBMTL",
    "DTP",
    "DWA",
    "EDM",
    "FAMO",
    "GLS",
    "IMTL",
    "IMTLG",
    "IMTLL",
    "MGDA",
    "PCD",
    "RLW",
    "SI",
    "STCH",
    "UW",
    "UWO",
    "AlignedMTL",
    "AutoLambda",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "ExcessMTL",
    "FairGrad",
    "FixedWeights",
    "GO4Align",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "Krum",
    "MoCo",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "RotoGrad",
    "SDMGrad",
    "TrimmedMean",
    "UPGrad",
    "UnitScal",
]
