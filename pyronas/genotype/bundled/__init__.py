"""The bundled genotypes, one JSON file each, loaded by name with
:func:`pyronas.genotype.load_genotype`."""
