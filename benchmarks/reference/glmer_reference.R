# Reference ML fits of binomial/Poisson GLMMs by lme4's glmer, for tests/test_glmm_estimate.py.
# Reads the CSVs in data/ (written from lme4's datasets; see data/README.md) and writes
# tests/reference/glmer.json. Run from the repository root:
#   Rscript benchmarks/reference/glmer_reference.R
# Tests never run R: they read the committed JSON. Measured with lme4 1.1-31 (R from Debian r-cran-lme4).
suppressMessages({library(lme4); library(jsonlite)})

cbpp <- read.csv("data/cbpp.csv")
cbpp$herd <- factor(cbpp$herd); cbpp$period <- factor(cbpp$period, levels = 1:4)
gt <- read.csv("data/grouseticks.csv")
gt$BROOD <- factor(gt$BROOD); gt$LOCATION <- factor(gt$LOCATION); gt$YEAR <- factor(gt$YEAR)
va <- read.csv("data/verbagg.csv")
va$id <- factor(va$id); va$item <- factor(va$item); va$r2 <- factor(va$r2, levels = c("N", "Y"))
va$Gender <- factor(va$Gender, levels = c("F", "M"))
va$btype <- factor(va$btype, levels = c("curse", "scold", "shout"))
va$situ <- factor(va$situ, levels = c("other", "self"))

# Tight optimiser tolerances so the reference is the optimum, not where the default stopped.
# tolPwrss: lme4's PIRLS stops when the penalised deviance changes by less than tolPwrss (relative;
# default 1e-7) and takes log|L|^2 from the Cholesky factor of the last iteration's *starting*
# weights, so at the default the Laplace deviance is that of a mode one step short (grouseticks
# one-way: logLik -1037.9477 at default, -1037.9399 at 1e-10 and 1e-13 at the same estimates).
# The reference is the converged Laplace; "laplace_default_tol" records the default's answer.
ctrl <- glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5, rhoend = 1e-10),
                     tolPwrss = 1e-12)
ctrl_default_tol <- glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5, rhoend = 1e-10))
# VerbAgg crossed: bobyqa with tolPwrss = 1e-12 stops early (logLik -4075.7271, "degenerate Hessian");
# Nelder-Mead reaches -4075.69986 (nloptwrap -4075.69987), the maximum varcomp finds too.
ctrl_nm <- glmerControl(optimizer = "Nelder_Mead", tolPwrss = 1e-12,
                        optCtrl = list(maxfun = 1e5, FtolAbs = 1e-12, FtolRel = 1e-15, XtolRel = 1e-10))

models <- list(
  list(name = "cbpp_period", data = "cbpp", one_factor = TRUE,
       formula = cbind(incidence, size - incidence) ~ period + (1 | herd), family = binomial("logit")),
  list(name = "cbpp_oneway", data = "cbpp", one_factor = TRUE,
       formula = cbind(incidence, size - incidence) ~ 1 + (1 | herd), family = binomial("logit")),
  list(name = "cbpp_probit", data = "cbpp", one_factor = TRUE,
       formula = cbind(incidence, size - incidence) ~ period + (1 | herd), family = binomial("probit")),
  list(name = "grouse_oneway", data = "grouseticks", one_factor = TRUE,
       formula = TICKS ~ 1 + (1 | BROOD), family = poisson("log")),
  list(name = "grouse_two", data = "grouseticks", one_factor = FALSE,
       formula = TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION), family = poisson("log")),
  list(name = "verbagg_crossed", data = "verbagg", one_factor = FALSE,
       formula = r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), family = binomial("logit"), control = ctrl_nm)
)
frames <- list(cbpp = cbpp, grouseticks = gt, verbagg = va)

one <- function(m, nagq, control = ctrl) {
  t0 <- proc.time()[["elapsed"]]
  fit <- glmer(m$formula, data = frames[[m$data]], family = m$family, nAGQ = nagq, control = control)
  vc <- as.data.frame(VarCorr(fit))
  list(nAGQ = nagq,
       beta = as.list(fixef(fit)),
       theta = as.list(getME(fit, "theta")),
       sds = setNames(as.list(vc$sdcor), vc$grp),
       logLik = as.numeric(logLik(fit)),
       deviance = deviance(fit),
       minus2logLik = -2 * as.numeric(logLik(fit)),
       singular = isSingular(fit),
       seconds = proc.time()[["elapsed"]] - t0)
}

out <- list(lme4 = as.character(packageVersion("lme4")), R = R.version.string, tolPwrss = 1e-12,
            models = list())
for (m in models) {
  fits <- list(laplace = one(m, 1, if (is.null(m$control)) ctrl else m$control),
               laplace_default_tol = one(m, 1, ctrl_default_tol))
  if (m$one_factor) fits$agq25 <- one(m, 25)
  out$models[[m$name]] <- c(list(data = m$data, formula = paste(deparse(m$formula), collapse = ""),
                                 family = m$family$family, link = m$family$link), fits)
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/reference/glmer.json")
