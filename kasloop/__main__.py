from kasloop.cli import main

main()
