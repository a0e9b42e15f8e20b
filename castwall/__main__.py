from castwall.cli import main

main()
