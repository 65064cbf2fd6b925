from rlzoo.motif.cli import main

main()
