//! The trainer's side of a package: the recipe it was trained with (from `card.json`) and the
//! run's held-out and test splits rebuilt from the dataset the card names (or another path).
//! Opening packages and measuring subnets live in `ofa-package`.

use std::path::{Path, PathBuf};

use ofa_package::{Package, CARD_FILE};
use ofa_schema::run::RunCard;

use crate::recipe::Recipe;
use crate::run::{load_splits, Splits, TrainError};

fn bad(pkg: &Package, reason: &str) -> TrainError {
    TrainError::Run {
        path: pkg.dir.join(CARD_FILE),
        reason: reason.into(),
    }
}

/// The package's run card, with its recipe.
fn card(pkg: &Package) -> Result<RunCard<Recipe>, TrainError> {
    pkg.card::<Recipe>()
        .map_err(|e| bad(pkg, &e.to_string()))?
        .ok_or_else(|| {
            bad(
                pkg,
                "the package has no card: cannot rebuild the held-out split",
            )
        })
}

/// The recipe the package was trained with (from the card).
pub fn recipe(pkg: &Package) -> Result<Recipe, TrainError> {
    Ok(card(pkg)?.recipe)
}

/// The run's splits, rebuilt from `data` or the dataset named in the card.
pub fn splits(pkg: &Package, data: Option<&Path>) -> Result<Splits, TrainError> {
    let card = card(pkg)?;
    let dir = match data {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from(&card.dataset),
    };
    load_splits(&card.recipe, &dir)
}

/// The dataset folder named in the package's card.
pub fn dataset(pkg: &Package) -> Result<PathBuf, TrainError> {
    Ok(PathBuf::from(card(pkg)?.dataset))
}
