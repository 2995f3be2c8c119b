"""``mtpjax new --level L --species Si[,O…] -o init.mtp``: an untrained MTP (like mlp's templates).

The basis is generated from the level formula (:func:`mtpjax.basis_generate.generate_basis`).
The file has no coefficients, so ``mtpjax train`` / ``mlp train`` start from scratch.
``.mtp`` files carry no element names: species are type indices 0…C−1 in the order given by
``--species``; the mapping (type index → element) is printed to stdout.
"""

from __future__ import annotations

from mtpjax.basis_generate import MAX_LEVEL, generate_basis
from mtpjax.io.mtp_file import write_mtp
from mtpjax.potential_data import RADIAL_BASIS_TYPES, MTPotential


def add_arguments(parser) -> None:
    parser.add_argument("--level", type=int, required=True,
                        help=f"basis level, even, 2..{MAX_LEVEL}")
    parser.add_argument("--species", action="append", required=True, metavar="EL[,EL…]",
                        help="element symbols, comma separated or repeated; their order "
                             "defines the type indices 0, 1, …")
    parser.add_argument("--min-dist", type=float, default=1.5, help="Å (default 1.5)")
    parser.add_argument("--max-dist", type=float, default=5.0, help="cutoff in Å (default 5.0)")
    parser.add_argument("--radial-basis-size", type=int, default=8,
                        help="number of Chebyshev functions (default 8)")
    parser.add_argument("--radial-funcs-count", type=int, default=None,
                        help="number of radial functions f_μ: must be the number the basis "
                             "uses (the default), as MLIP's reader requires")
    parser.add_argument("--radial-basis-type", choices=RADIAL_BASIS_TYPES,
                        default="RBChebyshev")
    parser.add_argument("-o", "--output", required=True, help="output .mtp file")


def parse_species(values: list[str]) -> list[str]:
    """Element symbols from repeated / comma-separated ``--species`` values (order kept)."""
    species = [s.strip() for v in values for s in v.split(",") if s.strip()]
    if not species:
        raise ValueError("no species given")
    try:
        from ase.data import atomic_numbers
    except ImportError:  # pragma: no cover - ase is a core dependency
        atomic_numbers = None
    for s in species:
        if atomic_numbers is not None and s not in atomic_numbers:
            raise ValueError(f"unknown element symbol {s!r}")
    duplicates = sorted({s for s in species if species.count(s) > 1})
    if duplicates:
        raise ValueError(f"species given more than once: {', '.join(duplicates)}")
    return species


def build_potential(args) -> tuple[MTPotential, list[str]]:
    """The untrained potential described by the parsed arguments, and the species list."""
    species = parse_species(args.species)
    basis = generate_basis(args.level)
    k = basis.radial_funcs_needed if args.radial_funcs_count is None else args.radial_funcs_count
    if k > basis.radial_funcs_needed:
        # MLIP-2's reader stops on such a file ("Wrong number of radial functions specified")
        raise ValueError(f"radial_funcs_count = {k}, but level {args.level} uses "
                         f"{basis.radial_funcs_needed} radial functions and MLIP's reader "
                         "requires exactly that many")
    pot = MTPotential(
        basis=basis,
        species_count=len(species),
        min_dist=args.min_dist,
        max_dist=args.max_dist,
        radial_basis_size=args.radial_basis_size,
        radial_funcs_count=k,
        radial_basis_type=args.radial_basis_type,
    )
    return pot, species


def run(args) -> int:
    try:
        pot, species = build_potential(args)
    except ValueError as exc:
        from mtpjax.cli import error_exit

        return error_exit(exc)
    write_mtp(args.output, pot)
    b = pot.basis
    print(f"wrote {args.output}: level {args.level}, {b.scalar_count} basis functions, "
          f"{b.basic_count} basic moments, {b.alpha_moments_count} moments, "
          f"{b.times_count} products, radial_funcs_count {pot.radial_funcs_count}")
    for i, s in enumerate(species):
        print(f"type {i} = {s}")
    return 0
