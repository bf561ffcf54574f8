//! The trainer's side of a package: the recipe it was trained with (from `card.json`) and the
//! run's held-out and test splits rebuilt from the dataset the card names (or another path).
//! Opening packages and measuring subnets live in `ofa-package`.

use std::path::{Path, PathBuf};

use ofa_package::{Package, CARD_FILE};
use serde_json::Value;

use crate::recipe::Recipe;
use crate::run::{load_splits, Splits, TrainError};

fn bad(pkg: &Package, reason: &str) -> TrainError {
    TrainError::Run {
        path: pkg.dir.join(CARD_FILE),
        reason: reason.into(),
    }
}

/// The recipe the package was trained with (from the card).
pub fn recipe(pkg: &Package) -> Result<Recipe, TrainError> {
    let r = pkg
        .card
        .get("recipe")
        .ok_or_else(|| bad(pkg, "no `recipe`: cannot rebuild the held-out split"))?;
    serde_json::from_value(r.clone()).map_err(|e| bad(pkg, &format!("`recipe`: {e}")))
}

/// The run's splits, rebuilt from `data` or the dataset named in the card.
pub fn splits(pkg: &Package, data: Option<&Path>) -> Result<Splits, TrainError> {
    let recipe = recipe(pkg)?;
    let dir = match data {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from(
            pkg.card
                .get("dataset")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(pkg, "no `dataset`: give the data path"))?,
        ),
    };
    load_splits(&recipe, &dir)
}
