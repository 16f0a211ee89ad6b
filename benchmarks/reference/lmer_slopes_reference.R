# Reference REML/ML fits of random-slope models by lme4, for tests/test_slopes.py.
#
# Run from the repository root:  Rscript benchmarks/reference/lmer_slopes_reference.R
# Writes the data files data/sleepstudy.csv, data/orthodont.csv, data/slopes_boundary.csv and the
# reference numbers tests/reference/lmer_slopes.json. The tests read only those files: R is never
# needed to run them. Measured with R 4.2.2, lme4 1.1-31, nlme 3.1-162 (Debian's r-cran-lme4).
#
# The optimiser is bobyqa with rhoend = 1e-12 so that lme4's optimum is converged well beyond the
# tests' 1e-4 relative tolerance (lme4's default stops at ~1e-6 in theta).
suppressMessages({
  library(lme4)
  library(jsonlite)
})

ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e5))

sleep <- lme4::sleepstudy[, c("Reaction", "Days", "Subject")]
write.csv(sleep, "data/sleepstudy.csv", row.names = FALSE)

orth <- as.data.frame(nlme::Orthodont)[, c("distance", "age", "Subject", "Sex")]
orth$Subject <- as.character(orth$Subject)
write.csv(orth, "data/orthodont.csv", row.names = FALSE)

# Boundary case: 15 groups x 6 x-values, true slope sd 0; lme4 returns a correlation of -1.
set.seed(8)
L <- 15
bnd <- expand.grid(x = 0:5, g = sprintf("g%02d", 1:L))
b0 <- rnorm(L, 0, 1.0)
bnd$y <- 10 + 0.5 * bnd$x + b0[as.integer(factor(bnd$g))] + rnorm(nrow(bnd), 0, 1)
bnd <- bnd[, c("y", "x", "g")]
write.csv(bnd, "data/slopes_boundary.csv", row.names = FALSE, quote = TRUE)
bnd <- read.csv("data/slopes_boundary.csv")  # fit exactly what the CSV holds (decimal round trip)

fit_one <- function(name, formula, data, group, reml) {
  f <- lmer(formula, data = data, REML = reml, control = ctrl)
  vc <- VarCorr(f)
  # one grouping factor; `||` splits it into several terms of the same factor
  blocks <- vc[names(vc) %in% c(group, paste0(group, ".", seq_len(9)))]
  sds <- unlist(lapply(blocks, function(b) attr(b, "stddev")))
  coefs <- unlist(lapply(blocks, function(b) names(attr(b, "stddev"))))
  names(sds) <- coefs
  q <- length(sds)
  corr <- diag(q)
  if (length(blocks) == 1 && q > 1) corr <- attr(blocks[[1]], "correlation")
  crit <- if (reml) unname(REMLcrit(f)) else unname(deviance(f))
  list(
    name = name, formula = deparse(formula), method = if (reml) "reml" else "ml",
    group = group, coefficients = coefs,
    sd = unname(sds), corr = unname(as.matrix(corr)), sigma = sigma(f),
    beta = as.list(fixef(f)), criterion = crit, theta = unname(getME(f, "theta")),
    singular = isSingular(f), n = nrow(data),
    converged = is.null(f@optinfo$conv$lme4$messages)
  )
}

cases <- list(
  list("sleepstudy", Reaction ~ Days + (Days | Subject), sleep, "Subject"),
  list("sleepstudy_uncorrelated", Reaction ~ Days + (Days || Subject), sleep, "Subject"),
  list("sleepstudy_quadratic", Reaction ~ Days + I(Days^2) + (Days + I(Days^2) | Subject), sleep, "Subject"),
  list("orthodont", distance ~ age + (age | Subject), orth, "Subject"),
  list("boundary", y ~ x + (x | g), bnd, "g"),
  list("boundary_uncorrelated", y ~ x + (x || g), bnd, "g")
)
out <- list()
for (cs in cases) {
  for (reml in c(TRUE, FALSE)) {
    r <- fit_one(cs[[1]], cs[[2]], cs[[3]], cs[[4]], reml)
    out[[length(out) + 1]] <- r
  }
}
meta <- list(lme4 = as.character(packageVersion("lme4")), R = R.version.string,
             optimizer = "bobyqa rhoend=1e-12")
writeLines(toJSON(list(meta = meta, fits = out), auto_unbox = TRUE, digits = NA, pretty = TRUE),
           "tests/reference/lmer_slopes.json")
