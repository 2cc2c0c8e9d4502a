from mk8s.cli import main

main()
