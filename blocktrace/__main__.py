from blocktrace.cli.app import main

main()
